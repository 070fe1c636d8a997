"""The translation study, step by step: base model -> parallel data -> fine-tuning runs -> scores.

    outputs/<translation name>/
      pretrain/etl/, pretrain/run/       only with translation.pretrain: the study's own base model
      data/<fingerprint>/                prepare's folder (examples, trainer dataset, manifest)
      runs/<init>/seed<k>/               trainer run folders: init pretrained | random_init, run.seed k
      eval/<init>/seed<k>/               translations.parquet, scores.parquet, scores.json (last)
      results.parquet                    tidy: init x seed x pair x decoding -> BLEU, chrF++, signatures
      runs.parquet                       one row per fine-tuning run (status, steps, losses, time)
      study.json                         resolved params, base model, data, runs (written last)

Fine-tuning goes through the QA study's machinery (mt5study.qa.finetune): the same base-model
checks (vocabulary against the tokenizer, architecture against the preset), the same launcher
(`mt5study.studies.runner.run_trial` -> `mt5study.launch.run`, accelerate + DeepSpeed), the same
reuse of finished runs. One model learns every pair ("translate English to German: ..."); the
runs of both starts share every training param but `model.checkpoint`, and each start is trained
once per seed so that the difference between starts can be set against the spread between seeds.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import config, head_start, records
from mt5study.paths import OUTPUTS, find
from mt5study.qa import finetune as qa_finetune
from mt5study.qa.prepare import Tokenizer
from mt5study.translation import prepare as prepare_lib
from mt5study.translation.config import TranslationParams

INITS = qa_finetune.INITS  # ("pretrained", "random_init")


def study_dir(params: TranslationParams, out_dir: str | Path | None = None) -> Path:
    """The study's folder (absolute): `out_dir` when given, else outputs/<translation.name>."""
    return (Path(out_dir) if out_dir else OUTPUTS / params.translation.name).resolve()


def base_model(params: TranslationParams, root: Path, redo: bool = False, keep_stale: bool = False) -> dict[str, Any]:
    """Tokenizer, checkpoint and vocabulary to start from (built first with translation.pretrain)."""
    return qa_finetune.base_model(params.translation, root, redo, keep_stale)


def run_overrides(params: TranslationParams, base: dict[str, Any], data: Path, init: str, seed: int) -> dict[str, Any]:
    """What one fine-tuning run changes in the training params: data, lengths, start, seed."""
    return qa_finetune.run_overrides(params.translation, base, data, init, seed)


def run_dir(root: Path, init: str, seed: int) -> Path:
    return root / "runs" / init / f"seed{seed}"


def check_fits(params: TranslationParams, data: Path, train: config.TrainParams) -> None:
    """Every split of the prepared data fills one micro-batch on every rank, or a ValueError says which."""
    need = train.run.micro_batch * train.run.world_size
    short = {split: n for split, n in records.read_json(Path(data) / "manifest.json")["num_examples"].items() if n < need}
    if short:
        raise ValueError(f"translation {params.translation.name}: split sizes {short} are below one micro-batch on "
                         f"every rank ({need}); add pairs or sources, or lower run.micro_batch")


def train_runs(params: TranslationParams, root: Path, data: Path, base: dict[str, Any], redo: bool = False,
               keep_stale: bool = False) -> pd.DataFrame:
    """Every (start, seed) run, trained or reused (the runner says why not); one row each (runs.parquet)."""
    tr = params.translation
    inits = INITS if tr.finetune.compare_random_init else INITS[:1]
    base_path = find(tr.finetune.params)
    from mt5study.studies.config import check_side_by_side
    from mt5study.studies.runner import side_by_side

    runs, loaded = [], []
    for init in inits:
        for seed in tr.finetune.seeds:
            overrides = run_overrides(params, base, data, init, seed)
            train = config.load(base_path, overrides, schema=config.TrainParams)
            check_fits(params, data, train)
            runs.append((init, seed, overrides))
            loaded.append((f"{init}/seed{seed}", train.run))
    if tr.finetune.concurrency > 1:
        check_side_by_side(loaded, tr.finetune.concurrency, f"{tr.name}: translation.finetune.concurrency")

    def one(init: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
        out = run_dir(root, init, seed)
        records.say(f"[{tr.name}] fine-tuning from {init}, seed {seed}")
        summary = qa_finetune._train(out, base_path, overrides, redo, keep_stale)
        records.say(f"[{tr.name}]   {init}, seed {seed}: {summary.get('status')} "
              f"eval loss {records.loss_text(summary.get('final_eval_loss'))}")
        return {"init": init, "seed": seed, "run": str(out), **{k: summary.get(k) for k in (
            "status", "error", "steps", "tokens", "wall_seconds", "final_train_loss", "final_eval_loss")}}

    rows = side_by_side([functools.partial(one, *r) for r in runs], tr.finetune.concurrency)
    table = pd.DataFrame(rows)
    table.to_parquet(root / "runs.parquet", index=False)
    return table


curves = qa_finetune.curves  # every metrics line of every run (train and held-out loss per step), with its seed


def evaluate_runs(params: TranslationParams, root: Path, data: Path, base: dict[str, Any], runs: pd.DataFrame,
                  redo: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores (tidy: init x seed x pair x decoding) and translations of every completed run."""
    from mt5study.translation import evaluate

    tr = params.translation
    tok = Tokenizer(base["tokenizer"])
    scores, translations = [], []
    for _, r in runs.iterrows():
        if r["status"] != "completed":
            print(f"[{tr.name}] {r['init']} seed {r['seed']}: {r['status']}, not evaluated", flush=True)
            continue
        out = root / "eval" / r["init"] / f"seed{r['seed']}"
        table, sc = evaluate.evaluate_run(Path(r["run"]), data, tr.eval, tok, out, redo)
        scores.append(sc.assign(init=r["init"], seed=r["seed"]))
        translations.append(table.assign(init=r["init"], seed=r["seed"]))
    results = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame()
    if not results.empty:
        results = results[["init", "seed", "pair", "decoding", "segments", "bleu", "chrf", "bleu_tokenize",
                           "bleu_signature", "chrf_signature"]]
    results.to_parquet(root / "results.parquet", index=False)
    return results, (pd.concat(translations, ignore_index=True) if translations else pd.DataFrame())


def per_pair_table(results: pd.DataFrame, digits: int = 1) -> pd.DataFrame:
    """BLEU and chrF++ per pair, start and decoding: mean, sd over seeds and n seeds, plus the
    mean over pairs (each seed's pair-average first, so its sd is the spread between seeds)."""
    if results.empty:
        return results
    over_pairs = results.groupby(["init", "seed", "decoding"], as_index=False)[["bleu", "chrf"]].mean()
    over_pairs["pair"] = "mean over pairs"
    full = pd.concat([results[["init", "seed", "pair", "decoding", "bleu", "chrf"]], over_pairs], ignore_index=True)
    g = full.groupby(["pair", "decoding", "init"], sort=False)
    table = g.agg(bleu_mean=("bleu", "mean"), bleu_sd=("bleu", "std"), chrf_mean=("chrf", "mean"),
                  chrf_sd=("chrf", "std"), seeds=("seed", "nunique")).reset_index()
    pairs = [p for p in dict.fromkeys(results["pair"])] + ["mean over pairs"]
    table["pair"] = pd.Categorical(table["pair"], pairs, ordered=True)
    return table.sort_values(["pair", "decoding", "init"]).reset_index(drop=True).round(digits)


def signatures(results: pd.DataFrame) -> pd.DataFrame:
    """The sacrebleu signature of each metric and target language (one row each)."""
    if results.empty:
        return results
    sig = results.assign(target=results["pair"].str.split("-").str[1])
    return sig[["target", "bleu_tokenize", "bleu_signature", "chrf_signature"]].drop_duplicates().sort_values(
        "target").reset_index(drop=True)


def seed_scores(results: pd.DataFrame, decoding: str = "greedy", metric: str = "chrf") -> pd.DataFrame:
    """One row per start and seed: `metric` averaged over pairs (the number the verdict compares)."""
    sub = results[results.decoding == decoding]
    return sub.groupby(["init", "seed"], as_index=False)[metric].mean().assign(status="completed")


def verdict(results: pd.DataFrame, decoding: str = "greedy", digits: int = 1) -> dict[str, Any]:
    """Mean chrF++ over pairs per start (mean ± sd over seeds, n, via mt5study.stats), the issue's
    criterion (the pretrained start beats random init by more than the spread between seeds: the
    larger of the two sds, with >= 2 seeds a side) and the stats verdict sentence (paired t-interval
    over shared seeds, else Welch: mt5study.studies.report.compare_seeds)."""
    from mt5study import stats
    from mt5study.studies.report import compare_seeds

    if results.empty or not (results.decoding == decoding).any():
        return {"decoding": decoding, "comparison": "no completed runs"}
    per_seed = seed_scores(results, decoding)
    out: dict[str, Any] = {"decoding": decoding, "metric": "chrF++ mean over pairs"}
    spreads = {init: stats.spread(per_seed.loc[per_seed.init == init, "chrf"].tolist())
               for init in INITS if init in set(per_seed.init)}
    for init, s in spreads.items():
        out[init] = {"mean": round(s.mean, digits), "sd": None if s.sd is None else round(s.sd, digits), "n": s.n}
    if set(INITS) <= set(out):
        p, r = out["pretrained"], out["random_init"]
        out["difference"] = round(spreads["pretrained"].mean - spreads["random_init"].mean, digits)
        out["spread"] = max(p["sd"] or 0.0, r["sd"] or 0.0)
        out["pretrained_beats_random_by_more_than_spread"] = bool(
            out["difference"] > out["spread"] and min(p["n"], r["n"]) >= 2)
        out["sentence"] = compare_seeds(per_seed[per_seed.init == "pretrained"], per_seed[per_seed.init == "random_init"],
                                        "the pretrained start", "random initialisation",
                                        f"chrF++ mean over pairs ({decoding})", "chrf", lower_is_better=False,
                                        digits=digits)
    return out


def verdict_text(v: dict[str, Any]) -> str:
    """What the verdict measured: the issue's criterion in one sentence, then the stats sentence."""
    if "difference" not in v:
        return f"{v.get('comparison', 'only one start evaluated')}: no comparison"
    p, r = v["pretrained"], v["random_init"]

    def one(s: dict[str, Any]) -> str:
        return f"{s['mean']} ± {s['sd']} (n={s['n']})" if s["sd"] is not None else f"{s['mean']} (n={s['n']}, no spread)"

    if min(p["n"], r["n"]) < 2:
        criterion = "with one seed a side no spread can be given, so the criterion is not judged"
    else:
        word = "beats" if v["pretrained_beats_random_by_more_than_spread"] else "does not beat"
        criterion = f"seed spread {v['spread']}: the pretrained start {word} random init by more than the spread"
    return (f"{v['metric']} ({v['decoding']}): pretrained {one(p)}, random init {one(r)}; difference "
            f"{v['difference']:+}, {criterion}. {v['sentence'][:1].upper()}{v['sentence'][1:]}")


def sample_translations(translations: pd.DataFrame, per_pair: int, seed: int | None = None, decoding: str = "greedy",
                        max_chars: int = 60) -> pd.DataFrame:
    """The first test strings of each pair: source, reference and each start's translation (one seed)."""
    if translations.empty:
        return translations
    seed = translations["seed"].min() if seed is None else seed
    t = translations[(translations.seed == seed) & (translations.decoding == decoding)]
    wide = t.pivot_table(index=["pair", "source", "reference"], columns="init", values="translation", aggfunc="first")
    wide = wide.groupby(level="pair", group_keys=False).head(per_pair).reset_index()
    for col in wide.columns[1:]:
        wide[col] = wide[col].map(lambda s: s if not isinstance(s, str) or len(s) <= max_chars else s[: max_chars - 1] + "…")
    wide.columns.name = None
    return wide


def timings(root: Path, runs: pd.DataFrame) -> dict[str, float]:
    """Seconds spent by the step's runs: fine-tuning (the runs' own wall time) and evaluation (each
    eval folder's scores.json), summed over starts and seeds."""
    train = float(pd.to_numeric(runs.get("wall_seconds"), errors="coerce").fillna(0).sum()) if not runs.empty else 0.0
    evals = [records.read_json(f).get("seconds") or 0.0 for f in sorted((Path(root) / "eval").glob("*/seed*/scores.json"))]
    return {"train": round(train, 1), "eval": round(float(sum(evals)), 1), "total": round(train + float(sum(evals)), 1)}


def record(root: Path, params: TranslationParams, base: dict[str, Any], data: Path, runs: pd.DataFrame,
           results: pd.DataFrame) -> None:
    """study.json: resolved params, base model, data folder, runs, timings and the verdict (written last)."""
    records.write_json_atomic(root / "study.json", {
        "params": config.to_dict(params), "base": base, "data": str(data),
        "runs": json.loads(runs.to_json(orient="records")), "verdict": verdict(results),
        "wall_seconds": timings(root, runs), "environment": records.environment()})


def run(params: TranslationParams, out_dir: str | Path | None = None, redo: bool = False,
        keep_stale: bool = False) -> dict[str, Any]:
    """The whole study (what notebook 07 does cell by cell); returns its tables."""
    root = study_dir(params, out_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = base_model(params, root, redo, keep_stale)
    data = prepare_lib.prepare(params.translation, root, base["tokenizer"], base["vocab_size"], redo)
    runs = train_runs(params, root, data, base, redo, keep_stale)
    results, translations = evaluate_runs(params, root, data, base, runs, redo)
    record(root, params, base, data, runs, results)
    return {"root": root, "base": base, "data": data, "runs": runs, "results": results, "translations": translations}


def report_table(study: str | Path) -> pd.DataFrame:
    """For the study report and site: a finished study folder's per-pair table (from results.parquet)."""
    path = Path(study) / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no translation results (run the translation step first)")
    return per_pair_table(pd.read_parquet(path))


def report_verdict(study: str | Path, decoding: str = "greedy") -> str:
    """For the study report: the verdict sentences of a finished study folder."""
    return verdict_text(verdict(pd.read_parquet(Path(study) / "results.parquet"), decoding))


def report_findings(study: str | Path) -> dict[str, Any] | None:
    """For notebook 05 (as report.qa_findings), JSON-ready for report.json: a finished translation
    study's pairs and their split sizes, the per-pair table (records: pair, decoding, init, BLEU and
    chrF++ mean/sd over seeds), the greedy verdict, the verdict sentences per decoding and the
    step's seconds (fine-tuning, evaluation); None when the folder holds no results."""
    study = Path(study)
    if not (study / "results.parquet").exists():
        return None
    results = pd.read_parquet(study / "results.parquet")
    done = records.read_json(study / "study.json") if (study / "study.json").exists() else {}
    sizes = None
    if done.get("data") and (Path(done["data"]) / "manifest.json").exists():
        split = prepare_lib.sizes(Path(done["data"]))[["train_examples", "validation_examples", "test_examples"]]
        sizes = {pair: {k.removesuffix("_examples"): int(v) for k, v in row.items()} for pair, row in split.iterrows()}
    table = per_pair_table(results)
    table["pair"] = table["pair"].astype(str)
    verdicts = {d: verdict(results, d) for d in results["decoding"].unique()}
    hs = head_start.findings(study)
    return {"pairs": list(dict.fromkeys(results["pair"])), "sizes": sizes,
            "table": json.loads(table.to_json(orient="records")),
            "verdict": verdicts.get("greedy") or next(iter(verdicts.values()), None),
            "sentences": [f"Translation: {verdict_text(v)}" for v in verdicts.values()]
            + ([f"Translation, fine-tuning curves: {hs['text']}"] if hs else []),
            "head_start": hs,
            "wall_seconds": done.get("wall_seconds")}
