"""Tables and seaborn figures of the studies, read only from the results tables (Parquet).

Notebooks call these; each returns a DataFrame or a matplotlib Figure and never trains.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

GIB = 2**30


def read(root: str | Path, name: str = "results") -> pd.DataFrame:
    """A study table: <root>/grid/results.parquet by default."""
    root = Path(root)
    path = root / f"{name}.parquet" if (root / f"{name}.parquet").exists() else root / "grid" / f"{name}.parquet"
    return pd.read_parquet(path)


def precision_table(results: pd.DataFrame, digits: int = 4) -> pd.DataFrame:
    """Per precision x ZeRO stage: time, speed, memory, final losses, divergence; stable rounding."""
    cols = ["precision", "zero_stage", "seed", "status", "steps", "wall_seconds", "tokens_per_second",
            "peak_memory_bytes", "final_train_loss", "final_eval_loss", "diverged_at_step", "skipped_steps", "reason"]
    t = results[[c for c in cols if c in results]].copy()
    t["peak_memory_gib"] = t.pop("peak_memory_bytes") / GIB
    order = {"fp32": 0, "bf16": 1, "fp16": 2}
    t = t.sort_values([c for c in ("precision", "zero_stage", "seed") if c in t],
                      key=lambda s: s.map(order) if s.name == "precision" else s)
    return t.reset_index(drop=True).round({"final_train_loss": digits, "final_eval_loss": digits,
                                           "wall_seconds": 1, "tokens_per_second": 0, "peak_memory_gib": 3})


PEOPLE = {  # column -> heading with its unit, for tables on the published pages
    "zero_stage": "ZeRO stage", "global_batch": "global batch (examples)", "lr": "peak lr",
    "wall_seconds": "wall time (s)", "tokens_per_second": "tokens/s", "peak_memory_gib": "peak memory (GiB)",
    "peak_memory_bytes": "peak memory (GiB)", "final_train_loss": "final train loss", "final_eval_loss": "final eval loss",
    "diverged_at_step": "diverged at step", "skipped_steps": "skipped steps", "model_states_gib": "model states (GiB)",
    "activations_gib": "activations (GiB)", "estimate_gib": "estimate (GiB)", "measured_peak_gib": "measured peak (GiB)",
    "deepspeed_model_states_gib": "DeepSpeed's model states (GiB)",
}


def for_people(table: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """The table with named columns and units (bytes shown in GiB), rounded for reading."""
    t = table.copy()
    if "peak_memory_bytes" in t:
        t["peak_memory_bytes"] = pd.to_numeric(t["peak_memory_bytes"], errors="coerce") / GIB
    rounding = {"wall_seconds": 1, "tokens_per_second": 0, "peak_memory_bytes": 2, "peak_memory_gib": 2,
                "tokens/s": 0, "wall time (s)": 1, "peak memory (GiB)": 2}
    t = t.round({c: rounding.get(c, digits) for c in t.columns if t[c].dtype.kind == "f"})
    for c in t.columns:  # whole numbers without ".0"
        if t[c].dtype.kind == "f" and rounding.get(c, digits) == 0:
            t[c] = t[c].astype("Int64")
    for c in [c for c in t.columns if str(c).startswith("min_gpus_")]:  # report.fits_summary
        t[c] = pd.to_numeric(t[c], errors="coerce").astype("Int64")
    t = t.rename(columns={**PEOPLE, **{c: f"fewest GPUs of {c[9:-3]} GiB" for c in t.columns if str(c).startswith("min_gpus_")}})
    return t.astype(object).where(t.notna(), "—")  # a missing value reads as a dash, not NaN


def _n_seeds(results: pd.DataFrame, by: list[str]) -> int:
    """The most finished seeds any group of `by` has (1 when the study ran one seed)."""
    ok = results[results["status"].isin(["completed", "diverged"])]
    return int(ok.groupby(by).size().max()) if not ok.empty else 0


def spread_note(results: pd.DataFrame, by: list[str]) -> str:
    """What the error bars are, or why there are none (one seed: no spread can be given)."""
    n = _n_seeds(results, by)
    if n >= 2:
        return f"bars and bands: ± 1 sd over {n} seeds (run.seed: initialisation and data order)"
    return "one seed per setting: no spread can be given, so no error bars are drawn"


def summary_table(results: pd.DataFrame, by: list[str], digits: int = 3) -> pd.DataFrame:
    """Per setting of `by`, over its seeds: final eval and train loss as mean ± sd with n, wall
    time, speed and peak memory (means), and how many seeds completed, diverged or did not run."""
    from mt5study import stats

    rows = []
    order = {"fp32": 0, "bf16": 1, "fp16": 2}
    for key, g in results.groupby(by, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[g["status"] == "completed"]
        ev, tr = stats.spread(ok["final_eval_loss"].tolist()), stats.spread(ok["final_train_loss"].tolist())
        row = dict(zip(by, key))
        row.update({
            "seeds run": len(g), "completed": len(ok),
            "final eval loss": ev.mean if ev.n else None, "± sd (eval)": ev.sd, "n (eval)": ev.n,
            "final train loss": tr.mean if tr.n else None, "± sd (train)": tr.sd,
            "diverged": int((g["status"] == "diverged").sum()),
            "not run": ", ".join(sorted({f"{r.status}: {r.reason}" if isinstance(r.reason, str) and r.reason else str(r.status)
                                         for r in g.itertuples() if r.status not in ("completed", "diverged")})),
        })
        for col, label, scale in (("wall_seconds", "wall time (s)", 1), ("tokens_per_second", "tokens/s", 1),
                                  ("peak_memory_bytes", "peak memory (GiB)", GIB)):
            if col in g:
                v = pd.to_numeric(ok[col], errors="coerce") / scale
                row[label] = float(v.mean()) if v.notna().any() else None
        rows.append(row)
    t = pd.DataFrame(rows)
    if "precision" in by and not t.empty:
        t = t.sort_values(by, key=lambda c: c.map(order) if c.name == "precision" else c)
    return t.reset_index(drop=True).round({"final eval loss": digits, "± sd (eval)": digits, "final train loss": digits,
                                           "± sd (train)": digits, "wall time (s)": 1, "tokens/s": 0,
                                           "peak memory (GiB)": 2})


def stable_view(table: pd.DataFrame, drop=("wall_seconds", "tokens_per_second", "peak_memory_gib", "mfu", "wall time (s)",
                                           "tokens/s", "peak memory (GiB)")) -> pd.DataFrame:
    """The columns that must not change between runs of the same params (for nbval)."""
    return table.drop(columns=[c for c in drop if c in table])


def precision_bars(results: pd.DataFrame) -> plt.Figure:
    """Wall time, tokens/s, peak memory and final eval loss per precision and ZeRO stage."""
    t = results.copy()
    t["peak_memory_gib"] = t["peak_memory_bytes"] / GIB
    t["stage"] = "ZeRO-" + t["zero_stage"].astype(str)
    ok = t[t["status"].isin(["completed", "diverged"])]
    errorbar = "sd" if _n_seeds(results, ["precision", "zero_stage"]) >= 2 else None  # never a zero-width bar
    fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
    for ax, (col, label) in zip(axes, [("wall_seconds", "wall time (s)"), ("tokens_per_second", "tokens/s"),
                                        ("peak_memory_gib", "peak memory (GiB)"), ("final_eval_loss", "final eval loss")]):
        if not ok.empty:
            sns.barplot(data=ok, x="precision", y=col, hue="stage", ax=ax, errorbar=errorbar, capsize=0.1,
                        order=[p for p in ("fp32", "bf16", "fp16") if p in set(ok.precision)])
        ax.set_ylabel(label)
        ax.set_xlabel("")
    for ax in axes[1:]:
        if ax.get_legend():
            ax.get_legend().remove()
    fig.suptitle(spread_note(results, ["precision", "zero_stage"]), fontsize=9)
    fig.tight_layout()
    return fig


def loss_curves(curves: pd.DataFrame, results: pd.DataFrame, hue: str, style: str | None = None,
                x: str = "tokens", y: str = "loss", marker: str | None = None) -> plt.Figure:
    """Training (or eval) loss against tokens for every trial."""
    keys = [k for k in (hue, style) if k]
    data = curves.drop(columns=[k for k in keys if k in curves]).merge(results[["trial", *keys]], on="trial")
    data = data[np.isfinite(data[y].astype(float))]
    seeds = _n_seeds(results, keys)
    fig, ax = plt.subplots(figsize=(7, 4))
    # One line per setting: the mean over its seeds at each logged point, a band of ± 1 sd
    sns.lineplot(data=data, x=x, y=y, hue=hue, style=style, ax=ax, errorbar="sd" if seeds >= 2 else None,
                 palette="viridis" if data[hue].dtype.kind in "if" else None, marker=marker)
    ax.set_xlabel("tokens (inputs + targets)" if x == "tokens" else x)
    ax.set_ylabel({"loss": "training loss", "eval_loss": "eval loss"}.get(y, y))
    ax.set_title(spread_note(results, keys), fontsize=9)
    fig.tight_layout()
    return fig


def loss_vs_lr(results: pd.DataFrame) -> plt.Figure:
    """Final eval loss against learning rate, one line per global batch."""
    ok = results[results["status"] == "completed"]
    seeds = _n_seeds(results, ["global_batch", "lr"])
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=ok, x="lr", y="final_eval_loss", hue="global_batch", marker="o", ax=ax, palette="viridis",
                 errorbar="sd" if seeds >= 2 else None, err_style="bars")
    ax.set_title(spread_note(results, ["global_batch", "lr"]), fontsize=9)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("final eval loss")
    fig.tight_layout()
    return fig


def lr_range_plot(curve: pd.DataFrame, suggestion: dict[str, Any]) -> plt.Figure:
    fig, ax = plt.subplots(figsize=(6, 4))
    sns.lineplot(data=curve, x="lr", y="loss", ax=ax)
    for key, ls in (("lr_steepest", "--"), ("lr_min_loss_over_10", ":")):
        ax.axvline(suggestion[key], ls=ls, color="grey", label=f"{key} = {suggestion[key]:.2g}")
    ax.set_xscale("log")
    ax.legend()
    fig.tight_layout()
    return fig


def time_to_target(curves: pd.DataFrame, results: pd.DataFrame, target: float) -> pd.DataFrame:
    """Per trial: the first eval step, tokens and training seconds at which eval loss <= target."""
    rows = []
    for trial, c in curves.sort_values("step").groupby("trial"):
        steps = c["step"].to_numpy()
        # seconds up to each logged step: mean step time of the interval x its steps
        elapsed = np.cumsum(c["step_seconds"].to_numpy(dtype=float) * np.diff(steps, prepend=0))
        hit = np.flatnonzero(c["eval_loss"].notna().to_numpy() & (c["eval_loss"].to_numpy(dtype=float) <= target))
        i = int(hit[0]) if hit.size else None
        rows.append({"trial": trial, "reached": i is not None,
                     "step": int(steps[i]) if i is not None else None,
                     "tokens": int(c["tokens"].iloc[i]) if i is not None else None,
                     "train_seconds": float(elapsed[i]) if i is not None else None})
    out = pd.DataFrame(rows).merge(results[["trial", "global_batch", "lr"]], on="trial")
    return out.sort_values("trial").reset_index(drop=True)


def compute_spent(grid: pd.DataFrame, search: pd.DataFrame) -> plt.Figure:
    """Examples processed by the exhaustive grid and by the pruned search."""
    fig, ax = plt.subplots(figsize=(4, 3.5))
    sns.barplot(x=["grid", "pruned search"], y=[grid["compute"].sum(), search["compute"].sum()], ax=ax)
    ax.set_ylabel("examples processed")
    fig.tight_layout()
    return fig
