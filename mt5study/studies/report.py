"""The study's headline findings, read only from the results tables (notebook 05)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import records
from mt5study.paths import OUTPUTS


class MixedInputsError(ValueError):
    """The runs a report would compare were computed from different data or code."""


def _results(study_dir: str | Path) -> pd.DataFrame:
    path = Path(study_dir) / "grid" / "results.parquet"
    if not path.exists():
        raise FileNotFoundError(f"{path}: no results table (run the study's notebook first)")
    return pd.read_parquet(path)


def provenance(tables: dict[str, pd.DataFrame], allow_mixed: bool = False) -> dict[str, Any]:
    """What the studies' rows were computed from: each distinct data sha, code fingerprint and
    machine with the studies and row counts using it, and the rows kept stale on purpose.

    Raises MixedInputsError naming the difference when the rows do not share one data sha and
    one code fingerprint (a table from before runs named their inputs counts as '?'), unless
    allow_mixed."""
    out: dict[str, Any] = {"data": {}, "code": {}, "machine": {}, "stale": []}
    for name, t in tables.items():
        t = t[t.status.isin(["completed", "diverged"])] if "status" in t else t  # the rows whose numbers are compared
        for key in ("data", "code", "machine"):
            values = t[key].fillna("?") if key in t else pd.Series(["?"] * len(t))
            for v, n in values.value_counts().sort_index().items():
                out[key].setdefault(str(v), []).append(f"{name} ({n})")
        if "stale" in t:
            out["stale"] += [f"{name}/{r.trial}: {r.stale}" for r in t.itertuples() if r.stale]
    for key in ("data", "code"):
        if len(out[key]) > 1 and not allow_mixed:
            seen = "; ".join(f"{v}: {', '.join(where)}" for v, where in out[key].items())
            raise MixedInputsError(f"the runs to compare were computed from different {key} ({seen}); rerun the "
                                   f"studies on the same {key}, or pass allow_mixed=True to compare them anyway")
    return out


def findings(precision_dir: str | Path, batch_lr_dir: str | Path, allow_mixed: bool = False) -> dict[str, Any]:
    """Best precision, best batch and learning rate, and what each study recorded; refuses
    (MixedInputsError) studies whose runs used different data or code unless allow_mixed."""
    prec = _results(precision_dir)
    bl = _results(batch_lr_dir)
    origin = provenance({Path(precision_dir).name: prec, Path(batch_lr_dir).name: bl}, allow_mixed)
    ok = prec[prec.status == "completed"]
    per_precision = (ok.groupby("precision")
                       .agg(final_eval_loss=("final_eval_loss", "mean"),
                            tokens_per_second=("tokens_per_second", "mean"),
                            peak_memory_bytes=("peak_memory_bytes", "max"))
                       .reset_index())
    fastest = per_precision.sort_values("tokens_per_second", ascending=False).iloc[0]
    not_run = prec[prec.status != "completed"][["precision", "zero_stage", "status", "reason"]]
    done = bl[bl.status == "completed"]
    best = done.loc[done.final_eval_loss.idxmin()]
    env_path = next(iter(sorted(Path(precision_dir).glob("grid/trials/*/env.json"))), None)
    env = records.read_json(env_path) if env_path else {}
    return {
        "hardware": env.get("hardware", {}),
        "provenance": origin,
        "per_precision": per_precision.round(4).to_dict(orient="records"),
        "fastest_precision": str(fastest.precision),
        "not_completed": not_run.to_dict(orient="records"),
        "best_batch": int(best.global_batch), "best_lr": float(best.lr),
        "best_eval_loss": round(float(best.final_eval_loss), 4),
        "batch_lr_trials": int(len(bl)), "batch_lr_completed": int(len(done)),
    }


def qa_findings(qa_dir: str | Path) -> dict[str, Any] | None:
    """Overall EM/F1 per start (pretrained, random init) from notebook 04's results, if present."""
    path = Path(qa_dir) / "results.parquet"
    if not path.exists():
        return None
    r = pd.read_parquet(path)
    r = r[(r.lang == "all") & (r.normalization == "language-aware")]
    return {row.init: {"exact_match": round(float(row.exact_match), 1), "f1": round(float(row.f1), 1),
                       "questions": int(row.questions)} for row in r.itertuples()}


def describe(f: dict[str, Any]) -> str:
    """The findings as text, led by a banner when any row was kept stale on purpose."""
    origin = f.get("provenance") or {}
    lines = [f"!!! STALE RESULTS KEPT ON PURPOSE (keep_stale): {s}" for s in origin.get("stale", [])]
    for key in ("data", "code", "machine"):
        if origin.get(key):
            lines.append(f"Computed from {key}: " + "; ".join(f"{v} [{', '.join(w)}]" for v, w in origin[key].items()))
    lines += [f"Hardware: {f['hardware'].get('cpu')} ({f['hardware'].get('cpu_count')} cores), GPUs: {f['hardware'].get('gpus') or 'none'}"]
    for r in f["per_precision"]:
        lines.append(f"  {r['precision']}: eval loss {r['final_eval_loss']:.4f}, {r['tokens_per_second']:.0f} tokens/s")
    for r in f["not_completed"]:
        lines.append(f"  {r['precision']} ZeRO-{r['zero_stage']}: {r['status']} ({r.get('reason') or ''})")
    lines.append(f"Fastest precision here: {f['fastest_precision']}")
    lines.append(f"Best of {f['batch_lr_completed']}/{f['batch_lr_trials']} batch x lr trials: global batch "
                 f"{f['best_batch']}, lr {f['best_lr']:g} (eval loss {f['best_eval_loss']:.4f})")
    for init, sc in (f.get("qa") or {}).items():
        lines.append(f"QA fine-tuned from {init}: EM {sc['exact_match']:.1f}, F1 {sc['f1']:.1f} ({sc['questions']} questions)")
    return "\n".join(lines)


def fits_summary(fits: pd.DataFrame) -> pd.DataFrame:
    """Fewest GPUs on which each precision x ZeRO stage x offload fits, per GPU size."""
    cols = [c for c in fits if c.startswith("fits_")]
    rows = []
    for (prec, stage, off), g in fits.groupby(["precision", "zero_stage", "offload"]):
        row = {"precision": prec, "zero_stage": stage, "offload": off}
        for c in cols:
            ok = g[g[c]]
            row[f"min_gpus_{c[5:]}"] = int(ok.n_gpus.min()) if not ok.empty else None
        rows.append(row)
    return pd.DataFrame(rows)


def recommend(f: dict[str, Any], fits: pd.DataFrame) -> str:
    """Recommendations for the 13B run from the measured findings and the memory model."""
    summary = fits_summary(fits)
    bf16 = summary[(summary.precision == "bf16") & (summary.zero_stage == 3) & (summary.offload == "none")]
    lines = ["- Precision: bf16 (mT5 was trained in bf16; fp16 overflows in T5's feed-forward, "
             "transformers #9295/#10819) where the GPUs support it."]
    if f["fastest_precision"] != "bf16":
        lines.append(f"  Measured here {f['fastest_precision']} was fastest: this device has no native bf16.")
    if not bf16.empty:
        r = bf16.iloc[0]
        sizes = [c for c in bf16 if c.startswith("min_gpus_")]
        lines.append("- ZeRO-3 without offload fits mT5-XXL (bf16, activation checkpointing as needed) on at least "
                     + ", ".join(f"{r[c]} GPUs of {c[9:]}" for c in sizes if r[c]))
    lines.append(f"- Batch and learning rate: at this scale the best was global batch {f['best_batch']} at lr "
                 f"{f['best_lr']:g}; rerun notebook 03 at the target scale (the search's journal lets Slurm array "
                 "tasks share it) before the full run.")
    return "\n".join(lines)


def save(f: dict[str, Any], fits: pd.DataFrame, out_dir: str | Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else OUTPUTS / "report"
    records.write_json_atomic(out / "report.json", {"findings": f, "env": records.environment()})
    fits.to_parquet(out / "memory_fits.parquet", index=False)
    return out / "report.json"


def memory_vs_measured(study_dir: str | Path) -> pd.DataFrame:
    """The memory model's bytes per device for each trial beside its measured peak (and DeepSpeed's).

    On CPU the measured peak is the process's resident set: it includes the Python and torch
    runtime (~0.5 GiB) and the dataset, which the model of model states + activations leaves out.
    """
    from mt5study import memory

    rows = []
    for trial in sorted(Path(study_dir).glob("grid/trials/*")):
        if not (trial / "summary.json").exists() or not (trial / "config.json").exists():
            continue
        cfg, s = records.read_json(trial / "config.json"), records.read_json(trial / "summary.json")
        if s.get("status") != "completed":
            continue
        run, data = cfg["run"], cfg["data"]
        world = run["nodes"] * run["processes_per_node"]
        preset = cfg["model"]["preset"]
        est = memory.estimate(preset, run["zero_stage"], run["precision"], world, run["micro_batch"],
                              data["input_length"], data["target_length"])
        row = {"trial": trial.name, "preset": preset, "precision": run["precision"], "zero_stage": run["zero_stage"],
               "model_states_gib": (est["parameters"] + est["gradients"] + est["optimizer_states"]) / 2**30,
               "activations_gib": est["activations"] / 2**30, "estimate_gib": est["total"] / 2**30,
               "measured_peak_gib": s["peak_memory_bytes"] / 2**30}
        if run["zero_stage"] in (2, 3):
            ds = memory.deepspeed_estimate(preset, run["zero_stage"], world)
            row["deepspeed_model_states_gib"] = ds["gpu"] / 2**30
        rows.append(row)
    return pd.DataFrame(rows).round(4)



def presets_table() -> pd.DataFrame:
    """The model presets: architecture, parameters, and the released checkpoints' counts."""
    from mt5study.model import PRESETS, RELEASED_PARAMETERS, count_parameters

    rows = []
    for name, dims in PRESETS.items():
        n = count_parameters(name)
        rows.append({"preset": name, **{k: dims[k] for k in ("d_model", "d_ff", "num_layers", "num_heads", "vocab_size")},
                     "parameters": n, "released": RELEASED_PARAMETERS.get(name),
                     "matches_release": None if name not in RELEASED_PARAMETERS else n == RELEASED_PARAMETERS[name]})
    return pd.DataFrame(rows)
