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

import json
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import config, records
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
    tr = params.translation
    return {**qa_finetune.run_overrides(tr, base, data, init), "run.seed": seed}


def run_dir(root: Path, init: str, seed: int) -> Path:
    return root / "runs" / init / f"seed{seed}"


def train_runs(params: TranslationParams, root: Path, data: Path, base: dict[str, Any], redo: bool = False,
               keep_stale: bool = False) -> pd.DataFrame:
    """Every (start, seed) run, trained or reused (the runner says why not); one row each (runs.parquet)."""
    tr = params.translation
    manifest = records.read_json(Path(data) / "manifest.json")
    inits = INITS if tr.finetune.compare_random_init else INITS[:1]
    base_path = find(tr.finetune.params)
    rows = []
    for init in inits:
        for seed in tr.finetune.seeds:
            overrides = run_overrides(params, base, data, init, seed)
            train = config.load(base_path, overrides, schema=config.TrainParams)
            need = train.run.micro_batch * train.run.world_size
            for split, n in manifest["num_examples"].items():
                if n < need:
                    raise ValueError(f"translation {split} split has {n} examples, fewer than one micro-batch on "
                                     f"every rank ({need}); add pairs or lower run.micro_batch")
            out = run_dir(root, init, seed)
            print(f"[{tr.name}] fine-tuning from {init}, seed {seed} -> {out}", flush=True)
            summary = qa_finetune._train(out, base_path, overrides, redo, keep_stale)
            print(f"[{tr.name}]   {summary.get('status')} eval_loss={summary.get('final_eval_loss')}", flush=True)
            rows.append({"init": init, "seed": seed, "run": str(out), **{k: summary.get(k) for k in (
                "status", "error", "steps", "tokens", "wall_seconds", "final_train_loss", "final_eval_loss")}})
    table = pd.DataFrame(rows)
    table.to_parquet(root / "runs.parquet", index=False)
    return table


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Every metrics line of every run (train and held-out loss per step), with its seed."""
    rows = []
    for _, r in runs.iterrows():
        for m in records.read_metrics(Path(r["run"]) / "metrics.jsonl"):
            rows.append({"init": r["init"], "seed": r["seed"], "step": m["step"], "loss": m.get("loss"),
                         "eval_loss": m.get("eval_loss")})
    return pd.DataFrame(rows)


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


def verdict(results: pd.DataFrame, decoding: str = "greedy", digits: int = 1) -> dict[str, Any]:
    """Mean chrF++ over pairs per start (mean ± sd over seeds, n) and whether the pretrained start
    beats random init by more than the spread between seeds (the larger of the two sds)."""
    if results.empty:
        return {"decoding": decoding, "comparison": "no completed runs"}
    sub = results[results.decoding == decoding]
    by_seed = sub.groupby(["init", "seed"])["chrf"].mean()
    out: dict[str, Any] = {"decoding": decoding, "metric": "chrF++ mean over pairs"}
    for init in INITS:
        if init in by_seed.index.get_level_values(0):
            v = by_seed.loc[init]
            out[init] = {"mean": round(float(v.mean()), digits), "sd": round(float(v.std(ddof=1)), digits) if len(v) > 1
                         else None, "n": int(len(v))}
    if set(INITS) <= set(out):
        p, r = out["pretrained"], out["random_init"]
        spread = max(p["sd"] or 0.0, r["sd"] or 0.0)
        out["difference"] = round(p["mean"] - r["mean"], digits)
        out["spread"] = spread
        out["pretrained_beats_random_by_more_than_spread"] = bool(out["difference"] > spread and min(p["n"], r["n"]) >= 2)
    return out


def verdict_text(v: dict[str, Any]) -> str:
    """One sentence of what the verdict measured."""
    if "difference" not in v:
        return f"{v.get('comparison', 'only one start evaluated')}: no comparison"
    p, r = v["pretrained"], v["random_init"]
    word = "beats" if v["pretrained_beats_random_by_more_than_spread"] else "does not beat"
    return (f"{v['metric']} ({v['decoding']}): pretrained {p['mean']} ± {p['sd']} (n={p['n']}), random init "
            f"{r['mean']} ± {r['sd']} (n={r['n']}); difference {v['difference']:+}, seed spread {v['spread']}: "
            f"the pretrained start {word} random init by more than the spread")


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


def record(root: Path, params: TranslationParams, base: dict[str, Any], data: Path, runs: pd.DataFrame,
           results: pd.DataFrame) -> None:
    """study.json: resolved params, base model, data folder, runs and the verdict (written last)."""
    records.write_json_atomic(root / "study.json", {
        "params": config.to_dict(params), "base": base, "data": str(data),
        "runs": json.loads(runs.to_json(orient="records")), "verdict": verdict(results),
        "environment": records.environment()})


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


def report_verdict(study: str | Path) -> str:
    """For the study report: the verdict sentence of a finished study folder (greedy decoding)."""
    return verdict_text(verdict(pd.read_parquet(Path(study) / "results.parquet")))
