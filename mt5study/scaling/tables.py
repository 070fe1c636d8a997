"""What the report and the site show of the scaling study, read back from its folder.

`report_tables(root)` gives the tables the study wrote (tables/*.parquet), `headline(root)` its
headline numbers (scaling.json). For readers (notebook 05, the site's index): `for_readers(root)`
formats them (named columns with units, three significant digits, intervals as "low to high",
no NaN), `sentences(root)` states the held-out gap, the power laws, the step-time model's error
and the recipe for the largest preset, and `findings(root)` is both, JSON-ready for report.json.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import records

TABLES = ("sizes", "optima", "laws", "holdout", "steptime", "recommendation", "days")
GOAL_GAP_PERCENT = 1.0  # issue 11: the held-out size's loss at the predicted optimum within 1 % of its grid's best


def report_tables(root: str | Path) -> dict[str, pd.DataFrame]:
    """{name: DataFrame} of the tables the study wrote under root/tables (absent ones left out):
    sizes (ladder and budgets), optima (eta*, B* per size with intervals and edge flags), laws
    (exponents with intervals), holdout (the held-out proof: gap %), steptime (measured vs
    predicted step time per world size and ZeRO stage), recommendation (per mt5-* preset), days."""
    root = Path(root)
    out = {}
    for name in TABLES:
        path = root / "tables" / f"{name}.parquet"
        if path.exists():
            out[name] = pd.read_parquet(path)
    return out


def headline(root: str | Path) -> dict:
    """The study's headline numbers (scaling.json): gap %, exponents, step-time errors."""
    path = Path(root) / "scaling.json"
    return records.read_json(path) if path.exists() else {}


def _g(x: Any, digits: int = 3) -> str:
    """A number to `digits` significant digits ('0.00316', '1.2e+04'), a dash when missing."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    x = float(f"{float(x):.{digits}g}")
    return f"{x:,.0f}" if 1000 <= abs(x) < 1e9 else f"{x:g}"  # 19,000 rather than 1.9e+04


def _interval(value: Any, low: Any, high: Any, digits: int = 3) -> str:
    """'0.0123 (0.01 to 0.015)': a value and its bootstrap interval."""
    return f"{_g(value, digits)} ({_g(low, digits)} to {_g(high, digits)})"


def _span(low: Any, high: Any) -> str:
    """'-0.589 to 2.073', or why there is no interval (a bootstrap refit that was not finite:
    optima extrapolated far beyond a grid whose best point lies on its edge)."""
    if any(v is None or not math.isfinite(float(v)) for v in (low, high)):
        return "no interval: some bootstrap refits were not finite"
    return f"{float(low):.3f} to {float(high):.3f}"


def _yes(flag: Any) -> str:
    return "yes" if bool(flag) else "no"


def optima_table(t: pd.DataFrame) -> pd.DataFrame:
    """Per size: parameters, tokens, the fitted optimum (eta*, B*) with intervals, the grid's best."""
    return pd.DataFrame({
        "size": t["size"],
        "non-embedding parameters (M)": [_g(n / 1e6) for n in t["parameters"]],
        "tokens per trial (k)": [_g(n / 1e3) for n in t["tokens"]],
        "η* peak lr (interval)": [_interval(*r) for r in t[["lr_opt", "lr_low", "lr_high"]].itertuples(index=False)],
        "B* global batch, examples (interval)": [_interval(*r) for r in
                                                  t[["batch_opt", "batch_low", "batch_high"]].itertuples(index=False)],
        "B* (tokens/step)": [_g(b) for b in t["batch_tokens_opt"]],
        "fitted loss at optimum": [_g(x, 4) for x in t["loss_opt"]],
        "grid's best (lr, batch, loss)": [f"{_g(lr)}, {int(b)}, {_g(loss, 4)}" for lr, b, loss in
                                          t[["grid_best_lr", "grid_best_batch", "grid_best_loss"]].itertuples(index=False)],
        "on the grid's edge": [e if e else "no" for e in t["edge"].fillna("")],
    })


def laws_table(t: pd.DataFrame) -> pd.DataFrame:
    """Each power law y = a x^b: the exponent and prefactor with intervals and the fitted range of x."""
    return pd.DataFrame({
        "quantity": t["quantity"], "against": t["x"],
        "exponent b (interval)": [_interval(*r) for r in t[["exponent", "exponent_low", "exponent_high"]].itertuples(index=False)],
        "prefactor a (interval)": [_interval(*r) for r in t[["prefactor", "prefactor_low", "prefactor_high"]].itertuples(index=False)],
        "fitted range of x": [f"{_g(lo)} to {_g(hi)}" for lo, hi in t[["x_min", "x_max"]].itertuples(index=False)],
        "confidence": [f"{c * 100:.0f} %" for c in t["confidence"]],
    })


def holdout_table(t: pd.DataFrame) -> pd.DataFrame:
    """The held-out proof: the predicted point, its loss against the grid's best, the gap."""
    return pd.DataFrame({
        "held-out size": t["size"], "predicted peak lr": [_g(x) for x in t["predicted_lr"]],
        "predicted global batch (examples)": t["predicted_batch"].astype(int),
        "extrapolated": [_yes(x) for x in t["extrapolation"]],
        "eval loss at prediction": [_g(x, 4) for x in t["loss_at_prediction"]],
        "grid's best eval loss": [_g(x, 4) for x in t["grid_best_loss"]],
        "gap (%)": [f"{x:+.2f}" for x in t["gap_percent"]],
        f"gap within {GOAL_GAP_PERCENT:g} %": [_yes(abs(x) <= GOAL_GAP_PERCENT) for x in t["gap_percent"]],
        "inside the grid": [_yes(x) for x in t["inside_grid"]],
        "rank among grid trials": [f"{r} of {n + 1}" for r, n in t[["rank_among_grid", "grid_trials"]].itertuples(index=False)],
    })


def steptime_table(t: pd.DataFrame) -> pd.DataFrame:
    """Measured against predicted seconds per step, per world size and ZeRO stage."""
    out = pd.DataFrame({
        "ranks": t["world_size"].astype(int), "ZeRO stage": t["zero_stage"].astype(int),
        "measured (s/step)": [_g(x) for x in t["step_seconds"]],
        "predicted (s/step)": [_g(x) for x in t["predicted_step_seconds"]],
        "error (%)": [f"{x:+.1f}" for x in t["error_percent"]],
    })
    if "calibrated" in t:  # a 1-rank run fits MFU or the gather cost: its error is 0 by construction
        out["role"] = ["calibration" if c else "prediction" for c in t["calibrated"]]
    if "tokens_per_second" in t:
        out["tokens/s"] = [_g(x) for x in t["tokens_per_second"]]
    if "peak_memory_gib_per_rank" in t:
        out["peak memory per rank (GiB)"] = [_g(x) for x in t["peak_memory_gib_per_rank"]]
    if "within_tolerance" in t:
        out["within tolerance"] = [_yes(x) for x in t["within_tolerance"]]
    if "gather_ms" in t and t["zero_stage"].eq(3).any():
        out["ZeRO-3 gather (ms, calibrated)"] = [_g(g) if z == 3 else "" for g, z in t[["gather_ms", "zero_stage"]].itertuples(index=False)]
    return out


def recommendation_table(t: pd.DataFrame) -> pd.DataFrame:
    """Per mt5-* preset: predicted eta*, B* with intervals, and per device the GPUs, micro-batch
    and ZeRO stage/offload that fit (from the memory model)."""
    out = pd.DataFrame({
        "preset": t["preset"], "parameters (B)": [_g(n / 1e9) for n in t["parameters"]],
        "tokens (B)": [_g(n / 1e9) for n in t["tokens"]],
        "peak lr (interval)": [_interval(*r) for r in t[["lr", "lr_low", "lr_high"]].itertuples(index=False)],
        "global batch, examples (interval)": [f"{int(b)} ({_g(lo)} to {_g(hi)})" for b, lo, hi in
                                              t[["batch", "batch_low", "batch_high"]].itertuples(index=False)],
        "batch (M tokens/step)": [_g(b / 1e6) for b in t["batch_tokens"]],
        "extrapolated": [_yes(x) for x in t["extrapolation"]],
    })
    for dev in [c[: -len("_gpus")] for c in t.columns if c.endswith("_gpus")]:
        out[f"{dev}: GPUs"] = [str(int(n)) if n == n and n is not None else "does not fit" for n in t[f"{dev}_gpus"]]
        out[f"{dev}: micro-batch"] = [str(int(m)) if m == m and m is not None else "—" for m in t[f"{dev}_micro_batch"]]
        out[f"{dev}: ZeRO stage/offload"] = t[f"{dev}_zero"].fillna("—")
    return out


def days_table(t: pd.DataFrame) -> pd.DataFrame:
    """Predicted days of training per preset (rows) on N nodes of each device (columns)."""
    t = t.assign(where=[f"{d}, {n} node{'s' if n > 1 else ''} (days)" for d, n in t[["device", "nodes"]].itertuples(index=False)],
                 value=[f"{x:.1f}" if x == x else (note or "—") for x, note in t[["days", "note"]].itertuples(index=False)])
    wide = t.pivot(index="preset", columns="where", values="value")
    wide = wide[list(dict.fromkeys(t["where"]))].reindex(list(dict.fromkeys(t["preset"])))
    wide.columns.name = None
    return wide.reset_index()


FORMAT = {"optima": optima_table, "laws": laws_table, "holdout": holdout_table, "steptime": steptime_table,
          "recommendation": recommendation_table, "days": days_table}


def for_readers(root: str | Path) -> dict[str, pd.DataFrame]:
    """The study's tables formatted for a published page (see module doc); absent ones left out."""
    return {name: FORMAT[name](t) for name, t in report_tables(root).items() if name in FORMAT}


def sentences(root: str | Path) -> list[str]:
    """The headline sentences, each from the study's numbers: the held-out gap against the 1 %
    goal, the exponents with their intervals, the step-time model's error, the largest preset's
    recipe, and any grid whose optimum lies on its edge."""
    h, tabs = headline(root), report_tables(root)
    lines = []
    proof = h.get("holdout") or {}
    if proof:
        met = "meets" if abs(proof["gap_percent"]) <= GOAL_GAP_PERCENT else "misses"
        lines.append(f"Scaling: fitted on {', '.join(proof['fitted_on'])}, the predicted optimum of the held-out "
                     f"{proof['size']} (lr {_g(proof['predicted_lr'])}, global batch {proof['predicted_batch']}"
                     f"{', extrapolated' if proof.get('extrapolation') else ''}) reaches eval loss "
                     f"{_g(proof['loss_at_prediction'], 4)} against its grid's best {_g(proof['grid_best_loss'], 4)}: "
                     f"a gap of {proof['gap_percent']:+.2f} %, which {met} the {GOAL_GAP_PERCENT:g} % goal.")
    laws = h.get("laws") or []
    if laws:
        lines.append(f"Scaling laws (every size, {laws[0]['confidence'] * 100:.0f} % bootstrap intervals): " + "; ".join(
            f"{law['quantity']} ∝ {law['x']}^{law['exponent']:.3f} ({_span(law['exponent_low'], law['exponent_high'])})"
            for law in laws) + ".")
    steps = h.get("steptime") or []
    if steps:
        # Older scaling.json files lack `calibrated`: there only the 1-rank ZeRO-0 run was fitted.
        fitted = [r for r in steps if r.get("calibrated", r["world_size"] == 1 and r["zero_stage"] == 0)]
        predicted = [r for r in steps if r not in fitted]
        gather = next((r.get("gather_ms") for r in steps if r["zero_stage"] == 3 and r.get("gather_ms")), None)
        calib = ", ".join(f"ZeRO-{r['zero_stage']}" for r in fitted)
        lines.append(
            "Step-time model against measured step time, predicted: " + "; ".join(
                f"{r['world_size']} rank{'s' if r['world_size'] > 1 else ''}, ZeRO-{r['zero_stage']}: "
                f"{r['error_percent']:+.1f} %" for r in predicted)
            + f" (calibrated on 1 rank at {calib}: MFU" + (f", {_g(gather)} ms per ZeRO-3 module gather" if gather else "")
            + ").")
    rec = tabs.get("recommendation")
    if rec is not None and not rec.empty:
        r = rec.iloc[-1]
        lines.append(f"Recipe for {r['preset']} at {_g(r['tokens'] / 1e9)}B tokens: peak lr {_g(r['lr'])} "
                     f"({_g(r['lr_low'])} to {_g(r['lr_high'])}), global batch {int(r['batch'])} examples "
                     f"({_g(r['batch_low'])} to {_g(r['batch_high'])})"
                     + (", extrapolated beyond the fitted sizes." if r["extrapolation"] else "."))
    opt = tabs.get("optima")
    if opt is not None:
        edge = opt[opt["edge"].fillna("").astype(str).str.len() > 0]
        if not edge.empty:
            many = len(edge) > 1
            where = "optima of {} lie on their grids' edges" if many else "optimum of {} lies on its grid's edge"
            lines.append(f"Scaling: the {where.format(', '.join(edge['size']))} (extend the grid before trusting "
                         "the fit).")
    return lines


def findings(root: str | Path | None) -> dict[str, Any] | None:
    """For notebook 05 and report.json: the headline numbers and sentences; None when the folder
    holds no finished study (its scaling.json is written last)."""
    if root is None or not (Path(root) / "scaling.json").exists():
        return None
    return {"headline": headline(root), "sentences": sentences(root)}
