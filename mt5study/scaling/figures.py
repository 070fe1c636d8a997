"""Figures and sentences of notebook 06, drawn from the study's tables (no computation here
beyond evaluating the fitted laws on a line)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns


def surfaces(results: pd.DataFrame):
    """Final eval loss against lr, one line per global batch, one panel per size."""
    df = results[results["status"] == "completed"]
    g = sns.relplot(data=df, x="lr", y="final_eval_loss", hue="global_batch", col="size", kind="line",
                    marker="o", palette="viridis", facet_kws={"sharey": False}, height=3, aspect=1.0)
    g.set(xscale="log")
    g.set_axis_labels("peak learning rate", "final eval loss")
    return g


def law(optima: pd.DataFrame, laws, name: str, x: str, y: str, low: str, high: str, ylabel: str,
        held_out: dict | None = None):
    """The sizes' optima with their bootstrap intervals, the fitted power law and its band."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    yerr = np.array([optima[y] - optima[low], optima[high] - optima[y]])
    ax.errorbar(optima[x], optima[y], yerr=np.clip(yerr, 0, None), fmt="o", capsize=3, label="optimum per size")
    pl = laws[name]
    xs = np.geomspace(optima[x].min() / 1.5, optima[x].max() * 2.5, 50)
    preds = [pl.predict(v) for v in xs]
    ax.plot(xs, [p["value"] for p in preds], label=f"fit: exponent {pl.b:.3f}")
    ax.fill_between(xs, [p["low"] for p in preds], [p["high"] for p in preds], alpha=0.2,
                    label=f"{pl.confidence:.0%} bootstrap band")
    if held_out:
        ax.scatter([held_out["x"]], [held_out["y"]], marker="*", s=150, color="C3", zorder=5, label="held-out size (measured)")
    ax.set(xscale="log", yscale="log", xlabel=x, ylabel=ylabel)
    ax.xaxis.set_minor_formatter(mticker.NullFormatter())  # minor labels on a <1-decade axis overlap
    ax.legend(fontsize=7)
    return fig


def frontier(curves: pd.DataFrame, front: pd.DataFrame):
    """Every trial's training loss against model FLOPs, coloured by size, and the lower envelope."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    if not curves.empty:
        sns.lineplot(data=curves, x="compute", y="loss", hue="size", units="trial", estimator=None,
                     alpha=0.25, lw=0.8, ax=ax)
    if not front.empty:
        ax.plot(front["compute"], front["loss"], color="k", lw=2, label="frontier")
    ax.set(xscale="log", xlabel="model FLOPs", ylabel="training loss")
    ax.legend(fontsize=7)
    return fig


def steptime_bars(table: pd.DataFrame):
    """Measured against predicted seconds per step for each (world size, ZeRO stage)."""
    df = table.assign(run=[f"{w} rank{'s' if w > 1 else ''}\nZeRO-{z}" for w, z in zip(table.world_size, table.zero_stage)])
    long = pd.concat([df.assign(kind="measured", seconds=df["step_seconds"]),
                      df.assign(kind="predicted", seconds=df["predicted_step_seconds"])])
    fig, ax = plt.subplots(figsize=(6, 3))
    sns.barplot(data=long, x="run", y="seconds", hue="kind", ax=ax)
    ax.set(xlabel="", ylabel="seconds per step")
    ax.tick_params(axis="x", labelsize=7)
    return fig


def edge_note(optima: pd.DataFrame) -> str:
    """One line per size whose optimum is not bracketed by its grid, or that none is."""
    flagged = optima[optima["edge"].astype(str).str.len() > 0]
    if flagged.empty:
        return "Every size's optimum lies inside its grid: no grid needs extending."
    return "\n".join(f"EDGE {r['size']}: {r['edge']}" for _, r in flagged.iterrows())


def holdout_sentence(proof: dict) -> str:
    """The held-out proof in one paragraph, from its numbers."""
    where = "inside" if proof["inside_grid"] else "outside"
    extra = " (an extrapolation of the fitted range)" if proof["extrapolation"] else ""
    goal = "meets" if abs(proof["gap_percent"]) <= 1.0 else "misses"
    return (f"Fitted on {', '.join(proof['fitted_on'])}, the laws predict {proof['size']}'s optimum at "
            f"lr {proof['predicted_lr']:.3g} (interval {proof['predicted_lr_interval'][0]:.3g}-"
            f"{proof['predicted_lr_interval'][1]:.3g}) and global batch {proof['predicted_batch']}{extra}. "
            f"Trained there, its final eval loss is {proof['loss_at_prediction']:.4f} against the grid's best "
            f"{proof['grid_best_loss']:.4f} (lr {proof['grid_best']['lr']:g}, batch {proof['grid_best']['global_batch']}): "
            f"a gap of {proof['gap_percent']:+.2f} %, which {goal} the 1 % goal. The point lies {where} the grid and "
            f"ranks {proof['rank_among_grid']} of {proof['grid_trials'] + 1} among the grid's trials and itself.")
