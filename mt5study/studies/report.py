"""The study's headline findings, read only from the results tables (notebook 05)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import head_start, records, stats
from mt5study.head_start import NAMES
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


def _seed_values(t: pd.DataFrame, value: str) -> dict[Any, float]:
    """seed -> value of the completed rows (a row without a seed column counts as seed 0)."""
    ok = t[t.status == "completed"]
    seeds = ok["seed"] if "seed" in ok else pd.Series([0] * len(ok), index=ok.index)
    return {s: float(v) for s, v in zip(seeds, ok[value]) if v is not None}


def compare_seeds(a: pd.DataFrame, b: pd.DataFrame, name_a: str, name_b: str, metric: str, value: str,
                  lower_is_better: bool = True, digits: int = 3) -> str:
    """A verdict on `value` between two settings' seeds: paired by seed (paired-t) when they share
    at least 2 seeds, else Welch; with one seed a side it says no spread can be given."""
    va, vb = _seed_values(a, value), _seed_values(b, value)
    shared = sorted(set(va) & set(vb))
    if len(shared) >= 2:
        return stats.verdict([va[s] for s in shared], [vb[s] for s in shared], name_a, name_b, metric,
                             test="paired-t", lower_is_better=lower_is_better, digits=digits)
    return stats.verdict(list(va.values()), list(vb.values()), name_a, name_b, metric, test="welch",
                         lower_is_better=lower_is_better, digits=digits)


def precision_verdicts(prec: pd.DataFrame, digits: int = 3) -> list[str]:
    """bf16 and fp16 against fp32 at each ZeRO stage, ZeRO-3 against ZeRO-0 in fp32, on final eval
    loss over seeds; a precision that did not complete says how it ended."""
    out = []
    for stage in sorted(prec.zero_stage.unique()):
        at = prec[prec.zero_stage == stage]
        ref = at[at.precision == "fp32"]
        for p in ("bf16", "fp16"):
            cand = at[at.precision == p]
            if cand.empty or ref.empty:
                continue
            if not (cand.status == "completed").any():
                ends = ", ".join(f"{k} x{v}" for k, v in cand.status.value_counts().items())
                steps = cand.diverged_at_step.dropna().astype(int).tolist() if "diverged_at_step" in cand else []
                reasons = sorted({r for r in cand.get("reason", pd.Series(dtype=object)).dropna() if r})
                out.append(f"{p} at ZeRO-{stage} did not complete ({ends}"
                           + (f"; diverged at step {', '.join(map(str, steps))}" if steps else "")
                           + (f": {'; '.join(reasons)}" if reasons else "") + ").")
                continue
            out.append(f"ZeRO-{stage}: " + compare_seeds(cand, ref, p, "fp32", "final eval loss", "final_eval_loss",
                                                          digits=digits))
    fp32 = prec[prec.precision == "fp32"]
    if {0, 3} <= set(fp32.zero_stage):
        out.append("fp32: " + compare_seeds(fp32[fp32.zero_stage == 3], fp32[fp32.zero_stage == 0], "ZeRO-3", "ZeRO-0",
                                            "final eval loss", "final_eval_loss", digits=digits))
    return out


def batch_lr_verdict(bl: pd.DataFrame, digits: int = 3) -> dict[str, Any]:
    """The best (global batch, lr) over seeds and the settings within noise of it (Welch)."""
    done = bl[bl.status == "completed"]
    if done.empty:
        raise ValueError("batch x lr study: no completed trial to compare")
    setting = {f"global batch {int(b)} at lr {lr:g}": (int(b), float(lr)) for b, lr in
               done[["global_batch", "lr"]].drop_duplicates().itertuples(index=False)}
    groups = {label: done[(done.global_batch == b) & (done.lr == lr)].final_eval_loss.astype(float).tolist()
              for label, (b, lr) in setting.items()}
    best = stats.best_of(groups, "final eval loss", test="welch", digits=digits)
    b, lr = setting[best["best"]]
    per_batch = {f"global batch {int(k)}": g.final_eval_loss.astype(float).tolist()
                 for k, g in done[done.lr == lr].groupby("global_batch")}
    return {"best_batch": b, "best_lr": lr, "sentence": best["sentence"], "tied": best["tied"],
            "at_best_lr": stats.best_of(per_batch, f"final eval loss at lr {lr:g}", digits=digits)["sentence"]
            if len(per_batch) > 1 else None}


def findings(precision_dir: str | Path, batch_lr_dir: str | Path, allow_mixed: bool = False) -> dict[str, Any]:
    """Precision x ZeRO and batch x lr results over seeds (mean ± sd, n) with the verdicts drawn
    from them; refuses (MixedInputsError) studies whose runs used different data or code unless
    allow_mixed."""
    prec = _results(precision_dir)
    bl = _results(batch_lr_dir)
    origin = provenance({Path(precision_dir).name: prec, Path(batch_lr_dir).name: bl}, allow_mixed)
    ok = prec[prec.status == "completed"]
    per_precision = []
    for (p, stage), g in ok.groupby(["precision", "zero_stage"]):
        s = stats.spread(g.final_eval_loss.astype(float).tolist())
        per_precision.append({"precision": p, "zero_stage": int(stage), "final_eval_loss": round(s.mean, 4),
                              "sd": None if s.sd is None else round(s.sd, 4), "n": s.n, "text": s.format(3),
                              "tokens_per_second": float(g.tokens_per_second.mean()),
                              "peak_memory_bytes": float(g.peak_memory_bytes.max())})
    # compared at one ZeRO stage (the lowest all ran at): fp16 through torch AMP runs at ZeRO-0 only
    speed = ok[ok.zero_stage == ok.zero_stage.min()].groupby("precision").tokens_per_second.mean()
    not_run = prec[~prec.status.isin(["completed"])][["precision", "zero_stage", "status", "reason"]].drop_duplicates()
    best = batch_lr_verdict(bl)
    done = bl[bl.status == "completed"]
    env_path = next(iter(sorted(Path(precision_dir).glob("grid/trials/*/env.json"))), None)
    env = records.read_json(env_path) if env_path else {}
    best_rows = done[(done.global_batch == best["best_batch"]) & (done.lr == best["best_lr"])]
    best_spread = stats.spread(best_rows.final_eval_loss.astype(float).tolist())
    return {
        "hardware": env.get("hardware", {}),
        "provenance": origin,
        "per_precision": per_precision,
        "fastest_precision": str(speed.idxmax()) if not speed.empty else None,
        "not_completed": not_run.to_dict(orient="records"),
        "precision_verdicts": precision_verdicts(prec),
        "best_batch": best["best_batch"], "best_lr": best["best_lr"],
        "best_eval_loss": round(best_spread.mean, 4), "best_eval_loss_sd": best_spread.sd, "best_n": best_spread.n,
        "batch_lr_verdict": best["sentence"], "batch_verdict_at_best_lr": best["at_best_lr"],
        "batch_lr_trials": int(len(bl)), "batch_lr_completed": int(len(done)),
        "seeds": {"precision": int(prec.groupby(["precision", "zero_stage"]).size().max()),
                  "batch_lr": int(bl.groupby(["global_batch", "lr"]).size().max())},
    }


def qa_findings(qa_dir: str | Path) -> dict[str, Any] | None:
    """EM/F1 per start (pretrained, random init) over seeds (mean, sd, n) from notebook 04's
    results (all languages, language-aware normalisation), with the verdict pretrained vs random."""
    path = Path(qa_dir) / "results.parquet"
    if not path.exists():
        return None
    r = pd.read_parquet(path)
    r = r[(r.lang == "all") & (r.normalization == "language-aware")]
    out: dict[str, Any] = {}
    for init, g in r.groupby("init"):
        em, f1 = stats.spread(g.exact_match.astype(float).tolist()), stats.spread(g.f1.astype(float).tolist())
        out[str(init)] = {"exact_match": round(em.mean, 1), "exact_match_sd": em.sd, "f1": round(f1.mean, 1),
                          "f1_sd": f1.sd, "n": f1.n, "questions": int(g.questions.iloc[0]),
                          "text": f"EM {em.format(1)}, F1 {f1.format(1)}"}
    inits = sorted(out)
    if len(inits) == 2:
        pre = next((i for i in inits if "pre" in i), inits[0])
        other = next(i for i in inits if i != pre)
        a, b = r[r.init == pre], r[r.init == other]
        a, b = a.assign(status="completed"), b.assign(status="completed")
        out["verdict"] = compare_seeds(a, b, NAMES.get(pre, pre), NAMES.get(other, other), "F1", "f1",
                                       lower_is_better=False, digits=1)
    hs = head_start.findings(qa_dir)
    if hs:
        out["head_start"] = hs
    return out


def translation_findings(translation_dir: str | Path | None) -> dict[str, Any] | None:
    """Notebook 07's study (translation.finetune.report_findings): pairs, sizes, BLEU and chrF++
    per pair for both starts, verdicts; None when the folder holds no results (step not run)."""
    from mt5study.translation import finetune

    return finetune.report_findings(translation_dir) if translation_dir else None


def scaling_findings(scaling_dir: str | Path | None) -> dict[str, Any] | None:
    """Notebook 06's study (scaling.tables.findings): headline numbers and sentences; None when
    the folder holds no finished study (step not run)."""
    from mt5study.scaling import tables

    return tables.findings(scaling_dir)


def not_run(study: str, folder: str | Path | None, step: str) -> str:
    """The one line a report shows for a study whose folder holds no results."""
    where = f"{Path(folder).name}/" if folder else "no folder given"
    return f"{study}: not run here (no results in {where}; the pipeline's `{step}` step writes them)."


def translation_section(f: dict[str, Any] | None, folder: str | Path | None = None) -> list[Any]:
    """What the report shows of translation: the pairs and their sizes, BLEU and chrF++ per pair
    for both starts (mean ± sd over seeds, n), the verdicts; one line when the study did not run."""
    from mt5study.translation import tables

    if not f:
        return [not_run("Translation", folder, "translation")]
    parts: list[Any] = ["**Pairs and their held-out splits** (strings; a source string is in one split only):",
                        tables.sizes_table(f),
                        "**BLEU and chrF++ per pair** (0-100, mean ± sd over seeds; `mean over pairs` averages each "
                        "seed's pairs first, so its sd is the spread between seeds):", tables.scores_table(f)]
    return parts + ["\n".join(f"- {line}" for line in tables.sentences(f))]


def scaling_section(folder: str | Path | None, part: str = "fits") -> list[Any]:
    """What the report shows of scaling. part="fits": the optima per size, the power laws with
    intervals, the held-out gap and the recipe per mt5-* preset (numbers fixed by the trials);
    part="steptime": the step-time model against measured step time (timings vary run to run).
    One line when the study did not run."""
    from mt5study.scaling import tables

    if folder is None or not (Path(folder) / "scaling.json").exists():
        return [not_run("Scaling", folder, "scaling")] if part == "fits" else []
    t = tables.for_readers(folder)
    captions = {"optima": "**The optimum per size**: η* and B* from a quadratic fitted to the loss surface in "
                          "(log lr, log batch), bootstrap intervals; the grid's best point beside it.",
                "laws": "**Power laws** y = a·x^b of the optimum across sizes (every size fitted):",
                "holdout": "**The held-out proof**: fitted without the largest size, the laws predicted its "
                           "optimum; trained there, its eval loss against the best of its full grid.",
                "recommendation": "**The recipe per mT5 size** at the poster's token budget (laws fitted on every "
                                  "size; all presets lie beyond the ladder, so every value is an extrapolation with "
                                  "its interval) and the plan that fits each GPU (memory model, bf16, activation "
                                  "checkpointing):",
                "days": "**Predicted days of training** on N nodes (step-time model at the assumed MFU):",
                "steptime": "**Step-time model** (FLOPs ÷ (devices × peak × MFU) + ZeRO's communication ÷ measured "
                            "bandwidth and latency + ZeRO-3's module gathers × their software cost) against the "
                            "measured seconds per step; 1-rank runs calibrate MFU (ZeRO-0) and the gather cost "
                            "(ZeRO-3), the 2-rank runs are predicted:"}
    names = ("optima", "laws", "holdout", "recommendation", "days") if part == "fits" else ("steptime",)
    out: list[Any] = []
    for name in names:
        if name in t:
            out += [captions[name], t[name]]
    if part == "fits":
        out.append("\n".join(f"- {line}" for line in tables.sentences(folder)
                              if not line.startswith("Step-time")))
    return out


def show(parts: list[Any]) -> None:
    """Display a section in a notebook: strings as Markdown, tables indexed by their first column
    (no row numbers; a Styler would put random ids in the page, which nbval cannot compare)."""
    from IPython.display import Markdown, display

    for p in parts:
        display(Markdown(p) if isinstance(p, str) else p.set_index(p.columns[0]) if isinstance(p, pd.DataFrame) else p)


def conclusions_by_study(f: dict[str, Any]) -> dict[str, list[str]]:
    """The verdict and headline sentences per study, in reading order (studies with none left out)."""
    from mt5study.translation import tables as translation_tables

    batch_lr = [f[k] for k in ("batch_lr_verdict", "batch_verdict_at_best_lr") if f.get(k)]
    qa = f.get("qa") or {}
    out = {"Precision × ZeRO stage": list(f.get("precision_verdicts") or []), "Batch × learning rate": batch_lr,
           "QA": (["QA: " + qa["verdict"]] if qa.get("verdict") else [])
           + (["QA, fine-tuning curves: " + qa["head_start"]["text"]] if qa.get("head_start") else []),
           "Translation": translation_tables.headline(f.get("translation")),
           "Scaling": list((f.get("scaling") or {}).get("sentences") or [])}
    return {k: v for k, v in out.items() if v}


def conclusions(f: dict[str, Any]) -> list[str]:
    """The study's verdict sentences, in reading order (for the report and the site's index)."""
    return [line for lines in conclusions_by_study(f).values() for line in lines]


def describe(f: dict[str, Any]) -> str:
    """The findings as text, led by a banner when any row was kept stale on purpose."""
    origin = f.get("provenance") or {}
    lines = [f"!!! STALE RESULTS KEPT ON PURPOSE (keep_stale): {s}" for s in origin.get("stale", [])]
    for key in ("data", "code", "machine"):
        if origin.get(key):
            lines.append(f"Computed from {key}: " + "; ".join(f"{v} [{', '.join(w)}]" for v, w in origin[key].items()))
    lines += [f"Hardware: {f['hardware'].get('cpu')} ({f['hardware'].get('cpu_count')} cores), GPUs: {f['hardware'].get('gpus') or 'none'}"]
    lines.append("Final eval loss per precision and ZeRO stage (mean ± sd over seeds):")
    for r in f["per_precision"]:
        lines.append(f"  {r['precision']} ZeRO-{r['zero_stage']}: {r['text']}, {r['tokens_per_second']:.0f} tokens/s")
    for r in f["not_completed"]:
        lines.append(f"  {r['precision']} ZeRO-{r['zero_stage']}: {r['status']} ({r.get('reason') or ''})")
    lines.append(f"Fastest precision here (at the lowest ZeRO stage run): {f['fastest_precision']}")
    lines.append(f"Batch x lr: {f['batch_lr_completed']}/{f['batch_lr_trials']} trials completed.")
    for init, sc in (f.get("qa") or {}).items():
        if init in NAMES:
            lines.append(f"QA fine-tuned from {NAMES[init]}: {sc['text']} ({sc['questions']} questions)")
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
                 f"{f['best_lr']:g} ({f['batch_lr_verdict']}); rerun notebook 03 at the target scale (the search's "
                 "journal lets Slurm array tasks share it) before the full run.")
    return "\n".join(lines)


def save(f: dict[str, Any], fits: pd.DataFrame, out_dir: str | Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else OUTPUTS / "report"
    records.write_json_atomic(out / "report.json", {"findings": f, "conclusions": conclusions(f),
                                                    "conclusions_by_study": [  # a list: JSON keys get sorted
                                                        {"study": k, "conclusions": v}
                                                        for k, v in conclusions_by_study(f).items()],
                                                    "env": records.environment()})
    fits.to_parquet(out / "memory_fits.parquet", index=False)
    return out / "report.json"


def memory_vs_measured(study_dir: str | Path) -> pd.DataFrame:
    """The memory model's bytes per device for each trial beside its measured peak (and DeepSpeed's).

    On CPU the measured peak is the process's resident set: it includes the Python and torch
    runtime (~0.5 GiB) and the dataset, which the model of model states + activations leaves out.
    """
    from mt5study import memory

    rows = []
    table = Path(study_dir) / "grid" / "results.parquet"  # the current grid's trials, not older folders
    current = set(pd.read_parquet(table, columns=["trial"]).trial) if table.exists() else None
    for trial in sorted(Path(study_dir).glob("grid/trials/*")):
        if current is not None and trial.name not in current:
            continue
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


def time_to_target_table(curves: pd.DataFrame, results: pd.DataFrame, target: float) -> pd.DataFrame:
    """Notebook 03's time to a target eval loss (studies.figures.time_to_target) for readers: one
    row per trial by global batch, lr and seed, named columns with units, a dash where the trial
    never reached the target."""
    from mt5study.studies import figures

    t = figures.time_to_target(curves, results, target)
    if "seed" in results:
        t = t.merge(results[["trial", "seed"]], on="trial", how="left")
    out = pd.DataFrame({"global batch (examples)": t["global_batch"].astype(int), "peak lr": [f"{x:g}" for x in t["lr"]]})
    if "seed" in t:
        out["seed"] = pd.to_numeric(t["seed"], errors="coerce").astype("Int64")
    out["reached target"] = ["yes" if r else "no" for r in t["reached"]]
    out["step"] = pd.to_numeric(t["step"], errors="coerce").astype("Int64")
    out["tokens (k)"] = (pd.to_numeric(t["tokens"], errors="coerce") / 1e3).round(1)
    out["training time (s)"] = pd.to_numeric(t["train_seconds"], errors="coerce").round(1)
    out = out.sort_values([c for c in ("global batch (examples)", "peak lr", "seed") if c in out], key=lambda c: (
        c.astype(float) if c.name == "peak lr" else c)).reset_index(drop=True)
    return out.astype(object).where(out.notna(), "—")
