"""The QA study, step by step: base model -> QA data -> fine-tuning runs -> evaluation.

    outputs/<qa name>/
      pretrain/etl/, pretrain/run/       only with qa.pretrain: the study's own base model
      data/<fingerprint>/                prepare's folder (examples, trainer dataset, eval windows)
      runs/pretrained/seed<k>/           fine-tuned from the pretrained checkpoint (a trainer run folder)
      runs/random_init/seed<k>/          the same params and budget from random initialisation
      eval/<init>/seed<k>/               predictions.parquet, scores.parquet, scores.json (last)
      results.parquet                    tidy: init x seed x language x normalisation -> EM, F1
      runs.parquet                       one row per fine-tuning run (status, steps, losses, time)

Every start is fine-tuned once per seed of `qa.finetune.seeds` (run.seed: data order and dropout,
and the weights of the random initialisation), so each score has a spread over seeds.

Both fine-tuning runs are `mt5study.launch.run` launches of the same training params (ZeRO stage,
precision, batch, learning rate), differing only in `model.checkpoint`; a finished run is reused
only when its params, data, starting checkpoint (by its weight bytes) and trainer code equal
what would run now (runner.run_trial; otherwise it is trained again and says why). The prepared
data and the evaluations are redone when their own code changed (inputs.json in their folders).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import config, records
from mt5study.paths import OUTPUTS, find
from mt5study.qa import prepare as prepare_lib
from mt5study.qa.config import QAParams

INITS = ("pretrained", "random_init")
INIT_LABELS = {"pretrained": "pretrained", "random_init": "random init"}  # the starts as tables and legends name them


class BaseModelError(ValueError):
    """The checkpoint to fine-tune cannot be used: missing, or not matching the tokenizer/preset."""


def study_dir(params: QAParams, out_dir: str | Path | None = None) -> Path:
    """The study's folder (absolute): `out_dir` when given, else outputs/<qa.name>."""
    return (Path(out_dir) if out_dir else OUTPUTS / params.qa.name).resolve()


# ----------------------------------------------------------------------------- the base model

def _local_or_hub(spec: str, what: str) -> str:
    local = find(spec)
    if local.exists():
        return str(local)
    if spec.startswith((".", "/", "outputs/")) or spec.count("/") != 1:
        raise BaseModelError(f"{what} {spec}: {local} does not exist (run the pretraining first, or set qa.pretrain)")
    return spec  # owner/name: a hub name


def check_base(checkpoint: str, tokenizer: str, train_params: config.TrainParams) -> int:
    """The checkpoint's vocabulary size, after checking it against the tokenizer and the preset."""
    from transformers import MT5Config

    from mt5study.model import config_for

    if Path(checkpoint).exists() and not (Path(checkpoint) / "config.json").is_file():
        raise BaseModelError(f"checkpoint {checkpoint}: no config.json, not a saved model folder (a run's model/)")
    try:
        cfg = MT5Config.from_pretrained(checkpoint)
    except OSError as e:
        raise BaseModelError(f"checkpoint {checkpoint}: no mT5 config.json there or on the hub: {e}") from e
    tok_size = len(prepare_lib.Tokenizer(tokenizer).hf)
    # A model's vocabulary may be padded past the tokenizer's (google/mt5-*: 250,112 rows for
    # 250,100 ids), never smaller, and padding is small (a multiple of 128 at most).
    if not 0 <= cfg.vocab_size - tok_size < 128:
        raise BaseModelError(f"checkpoint {checkpoint} has a vocabulary of {cfg.vocab_size} but the tokenizer "
                             f"{tokenizer} has {tok_size} ids: not the tokenizer it was pretrained with")
    want = config_for(train_params.model.preset, cfg.vocab_size)
    keys = ("d_model", "d_ff", "num_layers", "num_decoder_layers", "num_heads", "d_kv")
    got = {k: getattr(cfg, k) for k in keys}
    if got != {k: getattr(want, k) for k in keys}:
        raise BaseModelError(f"checkpoint {checkpoint} has architecture {got}, not the preset "
                             f"{train_params.model.preset!r} of the fine-tuning params")
    return int(cfg.vocab_size)


def base_model(params: QAParams, root: Path, redo: bool = False, keep_stale: bool = False) -> dict[str, Any]:
    """Tokenizer, checkpoint and vocabulary to fine-tune from (building them with qa.pretrain).

    With qa.pretrain, the study's own ETL output and base model are reused only when their
    params, source, data and code match (etl.run_or_reuse, runner.run_trial say why not)."""
    qa = params.qa
    if qa.pretrain is not None:
        from mt5study.data import etl

        etl_dir, run_dir = root / "pretrain" / "etl", root / "pretrain" / "run"
        etl_params = config.load(find(qa.pretrain.etl_params))
        etl.run_or_reuse(etl_params, etl_dir, overwrite=redo, keep_stale=keep_stale)
        summary = _train(run_dir, find(qa.pretrain.train_params), {**qa.pretrain.overrides, "data.path": str(etl_dir)},
                         redo, keep_stale)
        if summary.get("status") != "completed":
            raise RuntimeError(f"pretraining the base model in {run_dir} ended {summary.get('status')}: {summary.get('error')}")
        tokenizer, checkpoint = str(etl_dir / "tokenizer"), str(run_dir / "model")
    else:
        tokenizer = prepare_lib.resolve_tokenizer(qa.tokenizer)
        checkpoint = _local_or_hub(qa.finetune.checkpoint, "checkpoint")
    vocab = check_base(checkpoint, tokenizer, finetune_params(params))
    return {"tokenizer": tokenizer, "checkpoint": checkpoint, "vocab_size": vocab}


def _code_check(folder: Path, kind: str, redo: bool, keep_stale: bool) -> tuple[bool, dict[str, Any]]:
    """(redo?, the inputs record to write) for a cached QA folder: it is rebuilt when the code of
    `kind` changed since it was written (or it predates the record), unless kept stale on purpose."""
    wanted = {"format": records.INPUTS_FORMAT, "code": records.code_fingerprint(kind)}
    if redo or not folder.exists():
        return redo, wanted
    try:
        old = records.read_json(folder / records.INPUTS_FILE)
    except (OSError, ValueError):
        old = None
    reasons = records.inputs_changes(old, wanted)
    return not records.reuse_or_redo(folder, reasons, keep_stale, f"{kind} code matches"), wanted


def prepare_data(params: QAParams, root: Path, base: dict[str, Any], redo: bool = False,
                 keep_stale: bool = False) -> Path:
    """The prepared QA folder (prepare.prepare), rebuilt when the QA data code changed."""
    qa = params.qa
    fp = prepare_lib.fingerprint(qa, prepare_lib.Tokenizer(base["tokenizer"]), base["vocab_size"])
    folder = Path(root) / "data" / fp[:12]
    redo, wanted = _code_check(folder, "qa_data", redo, keep_stale)
    data = prepare_lib.prepare(qa, root, base["tokenizer"], base["vocab_size"], redo)
    if redo or not (data / records.INPUTS_FILE).exists():
        records.write_json_atomic(data / records.INPUTS_FILE, wanted)
    return data


# ----------------------------------------------------------------------------- fine-tuning

def finetune_params(params: QAParams, overrides: dict[str, Any] | None = None) -> config.TrainParams:
    """The fine-tuning TrainParams (validated), with the study's and any further overrides."""
    path = find(params.qa.finetune.params)
    return config.load(path, {**params.qa.finetune.overrides, **(overrides or {})}, schema=config.TrainParams)


def run_overrides(params: QAParams, base: dict[str, Any], data: Path, init: str, seed: int = 0) -> dict[str, Any]:
    """What a fine-tuning run changes in the training params: data, lengths, start weights, seed."""
    qa = params.qa
    return {
        **qa.finetune.overrides,
        "run.seed": seed,
        "data.path": str(Path(data).resolve()),
        "data.input_length": qa.input_length,
        "data.target_length": qa.target_length,
        "model.vocab_size": base["vocab_size"],
        "model.checkpoint": base["checkpoint"] if init == "pretrained" else None,
    }


def _train(out: Path, base_path: Path, overrides: dict[str, Any], redo: bool, keep_stale: bool = False) -> dict[str, Any]:
    """One launch through the studies' runner: a finished run of the same params, data,
    checkpoint and code is reused, any other is trained again (it says why), a preempted one resumed."""
    from mt5study.studies.runner import run_trial

    return run_trial(out, base_path, overrides, redo=redo, keep_stale=keep_stale)


def train_runs(params: QAParams, root: Path, data: Path, base: dict[str, Any], redo: bool = False,
               keep_stale: bool = False) -> pd.DataFrame:
    """Fine-tune from the pretrained checkpoint and (if asked) from random init, once per seed;
    one row per run."""
    manifest = records.read_json(Path(data) / "manifest.json")
    inits = INITS if params.qa.finetune.compare_random_init else INITS[:1]
    base_path = find(params.qa.finetune.params)
    from mt5study.studies.config import check_side_by_side
    from mt5study.studies.runner import side_by_side

    runs, loaded = [], []
    for init in inits:
        for seed in params.qa.finetune.seeds:
            overrides = run_overrides(params, base, data, init, seed)
            train = config.load(base_path, overrides, schema=config.TrainParams)
            need = train.run.micro_batch * train.run.world_size
            for split, n in manifest["num_examples"].items():
                if n < need:
                    raise ValueError(f"QA {split} split has {n} training windows, fewer than one micro-batch on "
                                     f"every rank ({need}); add questions or lower run.micro_batch")
            runs.append((init, seed, overrides))
            loaded.append((f"{init}/seed{seed}", train.run))
    concurrency = params.qa.finetune.concurrency
    if concurrency > 1:
        check_side_by_side(loaded, concurrency, f"{params.qa.name}: qa.finetune.concurrency")

    def one(init: str, seed: int, overrides: dict[str, Any]) -> dict[str, Any]:
        out = root / "runs" / init / f"seed{seed}"
        records.say(f"[{params.qa.name}] fine-tuning from {init}, seed {seed}")
        summary = _train(out, base_path, overrides, redo, keep_stale)
        records.say(f"[{params.qa.name}]   {init}, seed {seed}: {summary.get('status')} "
              f"eval loss {records.loss_text(summary.get('final_eval_loss'))}")
        model_cfg = out / "model" / "config.json"
        return {"init": init, "seed": seed, "run": str(out), **{k: summary.get(k) for k in (
            "status", "error", "steps", "tokens", "wall_seconds", "final_train_loss", "final_eval_loss")},
            "dropout_rate": records.read_json(model_cfg).get("dropout_rate") if model_cfg.exists() else None,
            **{k: v for k, v in records.provenance(out).items() if k != "run"}}

    rows = side_by_side([functools.partial(one, *r) for r in runs], concurrency)
    table = pd.DataFrame(rows)
    table.to_parquet(root / "runs.parquet", index=False)
    return table


def curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Every metrics line of the fine-tuning runs (train and eval loss per step)."""
    rows = []
    for _, r in runs.iterrows():
        for m in records.read_metrics(Path(r["run"]) / "metrics.jsonl"):
            rows.append({"init": r["init"], "seed": r.get("seed", 0), "step": m["step"], "loss": m.get("loss"),
                         "eval_loss": m.get("eval_loss")})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------- evaluation

def evaluate_runs(params: QAParams, root: Path, data: Path, base: dict[str, Any], runs: pd.DataFrame,
                  redo: bool = False, keep_stale: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scores (tidy: init x seed x lang x normalisation) and predictions of every completed run."""
    from mt5study.qa import evaluate

    tok = prepare_lib.Tokenizer(base["tokenizer"])
    scores, predictions = [], []
    for _, r in runs.iterrows():
        seed = int(r.get("seed", 0))
        if r["status"] != "completed":
            print(f"[{params.qa.name}] {r['init']} seed {seed}: {r['status']}, not evaluated", flush=True)
            continue
        out = root / "eval" / r["init"] / f"seed{seed}"  # also redone when the evaluation code changed
        again, wanted = _code_check(out, "qa_eval", redo, keep_stale)
        preds, sc = evaluate.evaluate_run(Path(r["run"]), data, params.qa.eval, tok, out, again)
        if again or not (out / records.INPUTS_FILE).exists():
            records.write_json_atomic(out / records.INPUTS_FILE, wanted)
        scores.append(sc.assign(init=r["init"], seed=seed))
        predictions.append(preds.assign(init=r["init"], seed=seed))
    results = pd.concat(scores, ignore_index=True) if scores else pd.DataFrame()
    preds = pd.concat(predictions, ignore_index=True) if predictions else pd.DataFrame()
    if not results.empty:
        results = results[["init", "seed", "lang", "normalization", "rules", "questions", "exact_match", "f1"]]
    results.to_parquet(root / "results.parquet", index=False)
    return results, preds


def score_pivot(results: pd.DataFrame, normalization: str = "language-aware", digits: int = 1) -> pd.DataFrame:
    """EM and F1 per language (rows) and start (columns) as mean ± sd over seeds, with n (seeds)
    and the questions scored: the notebook's stable table. One seed: the mean, marked no spread."""
    from mt5study import stats

    sub = results[results.normalization == normalization]
    rows = []
    for lang in lang_order(sub["lang"]):
        at = sub[sub.lang == lang]
        row: dict[str, Any] = {"lang": lang, "questions": int(at["questions"].iloc[0])}
        for init in [i for i in INITS if i in set(at["init"])]:
            one = at[at.init == init]
            for col, name in (("exact_match", "EM"), ("f1", "F1")):
                sp = stats.spread(one[col].astype(float).tolist())
                row[f"{INIT_LABELS[init]} {name}"] = (f"{sp.mean:.{digits}f} ± {sp.sd:.{digits}f}" if sp.has_spread
                                         else f"{sp.mean:.{digits}f} (no spread)")
            row[f"{INIT_LABELS[init]} n"] = int(one["seed"].nunique()) if "seed" in one else len(one)
        rows.append(row)
    return pd.DataFrame(rows).set_index("lang")


def lang_order(langs: pd.Series) -> list[str]:
    """Languages sorted, then `all` (the mean over languages)."""
    order = sorted(set(langs) - {"all"})
    return order + (["all"] if "all" in set(langs) else [])


def sample_predictions(predictions: pd.DataFrame, per_language: int, max_chars: int = 60) -> pd.DataFrame:
    """The first questions of each language: each start's answer (first seed) beside the reference."""
    if predictions.empty:
        return predictions
    if "seed" in predictions:
        predictions = predictions[predictions.seed == predictions.seed.min()]
    wide = predictions.pivot_table(index=["lang", "id"], columns="init", values="prediction", aggfunc="first")
    refs = predictions.drop_duplicates("id").set_index("id")["references"]
    questions = predictions.drop_duplicates("id").set_index("id")["question"]
    wide = wide.groupby(level="lang", group_keys=False).head(per_language).reset_index()
    wide.insert(2, "question", wide["id"].map(questions))
    wide.insert(3, "reference", wide["id"].map(lambda i: " | ".join(refs[i])))
    for col in wide.columns[2:]:
        wide[col] = wide[col].map(lambda s: s if not isinstance(s, str) or len(s) <= max_chars else s[: max_chars - 1] + "…")
    wide.columns.name = None
    return wide.drop(columns=["id"]).rename(columns=INIT_LABELS)


def record(root: Path, params: QAParams, base: dict[str, Any], data: Path, runs: pd.DataFrame) -> None:
    """study.json: the resolved params, the base model, the data folder, the runs (written last)."""
    records.write_json_atomic(root / "study.json", {
        "params": config.to_dict(params), "base": base, "data": str(data),
        "runs": json.loads(runs.to_json(orient="records")), "environment": records.environment()})


def run(params: QAParams, out_dir: str | Path | None = None, redo: bool = False, keep_stale: bool = False) -> dict[str, Any]:
    """The whole study (what the notebook does cell by cell); returns its tables."""
    root = study_dir(params, out_dir)
    root.mkdir(parents=True, exist_ok=True)
    base = base_model(params, root, redo, keep_stale)
    data = prepare_data(params, root, base, redo, keep_stale)
    runs = train_runs(params, root, data, base, redo, keep_stale)
    results, predictions = evaluate_runs(params, root, data, base, runs, redo, keep_stale)
    record(root, params, base, data, runs)
    return {"root": root, "base": base, "data": data, "runs": runs, "results": results, "predictions": predictions}
