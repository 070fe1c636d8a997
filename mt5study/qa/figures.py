"""Figures and verdicts of the QA study, read only from its tables (never trains)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns

from mt5study import stats
from mt5study.head_start import NAMES  # the starts as sentences name them
from mt5study.qa.finetune import lang_order


def _labelled(t: pd.DataFrame) -> pd.DataFrame:
    """The starts as legends name them ("random init", not the folder name random_init), in the column `start`."""
    from mt5study.qa.finetune import INIT_LABELS

    return t.assign(start=t["init"].map(lambda i: INIT_LABELS.get(i, i))) if "init" in t else t


def _seeds(t: pd.DataFrame) -> int:
    return int(t["seed"].nunique()) if "seed" in t and not t.empty else (1 if not t.empty else 0)


def scores_bars(results: pd.DataFrame, normalization: str = "language-aware") -> plt.Figure:
    """EM and F1 per language, one bar per start: the mean over seeds, error bars ± 1 sd (none,
    and a note saying so, with one seed)."""
    t = _labelled(results[results.normalization == normalization])
    n = _seeds(t)
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    for ax, col, label in zip(axes, ("exact_match", "f1"), ("exact match (%)", "F1 (%)")):
        if not t.empty:
            sns.barplot(data=t, x="lang", y=col, hue="start", ax=ax, order=lang_order(t["lang"]),
                        errorbar="sd" if n >= 2 else None, capsize=0.1)
        ax.set_xlabel("")
        ax.set_ylabel(label)
        bars = f"mean ± 1 sd over {n} seeds" if n >= 2 else "one seed: no spread, no error bar"
        ax.set_title(f"{label}, {normalization} normalisation ({bars})", fontsize=9)
    if axes[1].get_legend():
        axes[1].get_legend().remove()
    fig.tight_layout()
    return fig


def loss_curves(curves: pd.DataFrame) -> plt.Figure:
    """Training loss (lines: mean over seeds, band ± 1 sd) and held-out loss (points) per step."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if not curves.empty:
        curves = _labelled(curves)
        n = _seeds(curves)
        sns.lineplot(data=curves, x="step", y="loss", hue="start", ax=ax, errorbar="sd" if n >= 2 else None)
        ev = curves.dropna(subset=["eval_loss"])
        sns.scatterplot(data=ev, x="step", y="eval_loss", hue="start", marker="s", ax=ax, legend=False)
    ax.set_ylabel("loss (train: line, held out: squares)")
    fig.tight_layout()
    return fig


def _per_seed(results: pd.DataFrame, init: str, col: str, normalization: str) -> dict[int, float]:
    t = results[(results.normalization == normalization) & (results.lang == "all") & (results.init == init)]
    seeds = t["seed"] if "seed" in t else pd.Series([0] * len(t), index=t.index)
    return {int(s): float(v) for s, v in zip(seeds, t[col])}


def verdict(results: pd.DataFrame, normalization: str = "language-aware", digits: int = 1) -> str:
    """Pretrained start vs random init on F1 and EM (mean over languages), from the per-seed scores
    with a stated test: paired t over shared seeds (the same seed: same data order), else Welch."""
    inits = set(results["init"]) if not results.empty else set()
    if not {"pretrained", "random_init"} <= inits:
        return "only one start evaluated: no comparison"
    out = []
    for col, metric in (("f1", f"F1 (mean over languages, {normalization})"), ("exact_match", "EM")):
        a, b = _per_seed(results, "pretrained", col, normalization), _per_seed(results, "random_init", col, normalization)
        shared = sorted(set(a) & set(b))
        if len(shared) >= 2:
            va, vb, test = [a[s] for s in shared], [b[s] for s in shared], "paired-t"
        else:
            va, vb, test = list(a.values()), list(b.values()), "welch"
        out.append(stats.verdict(va, vb, NAMES["pretrained"], NAMES["random_init"], metric, test=test,
                                 lower_is_better=False, digits=digits))
    return "\n".join(out)

