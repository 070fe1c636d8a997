"""Figures and verdicts of the QA study, read only from its tables (never trains)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns


def scores_bars(results: pd.DataFrame, normalization: str = "language-aware") -> plt.Figure:
    """EM and F1 per language, one bar per start (pretrained / random init)."""
    t = results[results.normalization == normalization]
    fig, axes = plt.subplots(1, 2, figsize=(12, 3.6), sharey=True)
    for ax, col, label in zip(axes, ("exact_match", "f1"), ("exact match (%)", "F1 (%)")):
        if not t.empty:
            sns.barplot(data=t, x="lang", y=col, hue="init", ax=ax, order=_lang_order(t["lang"]))
        ax.set_xlabel("")
        ax.set_ylabel(label)
        ax.set_title(f"{label}, {normalization} normalisation", fontsize=10)
    if axes[1].get_legend():
        axes[1].get_legend().remove()
    fig.tight_layout()
    return fig


def loss_curves(curves: pd.DataFrame) -> plt.Figure:
    """Training loss (lines) and held-out loss (points) per step of each fine-tuning run."""
    fig, ax = plt.subplots(figsize=(7, 3.6))
    if not curves.empty:
        sns.lineplot(data=curves, x="step", y="loss", hue="init", ax=ax)
        ev = curves.dropna(subset=["eval_loss"])
        sns.scatterplot(data=ev, x="step", y="eval_loss", hue="init", marker="s", ax=ax, legend=False)
    ax.set_ylabel("loss (train: line, held out: squares)")
    fig.tight_layout()
    return fig


def verdict(results: pd.DataFrame, normalization: str = "language-aware", digits: int = 1) -> str:
    """What was measured: mean F1 and EM over languages, pretrained start versus random init."""
    t = results[(results.normalization == normalization) & (results.lang == "all")].set_index("init")
    if not {"pretrained", "random_init"} <= set(t.index):
        return "only one start evaluated: no comparison"
    p, r = t.loc["pretrained"], t.loc["random_init"]
    df1, dem = round(p.f1 - r.f1, digits), round(p.exact_match - r.exact_match, digits)
    head = (f"mean over languages ({normalization}): pretrained start F1 {p.f1:.{digits}f}, EM {p.exact_match:.{digits}f}; "
            f"random init F1 {r.f1:.{digits}f}, EM {r.exact_match:.{digits}f}; ")
    if df1 == 0:
        return head + "the same F1 from both starts"
    return head + (f"the pretrained start is {abs(df1):.{digits}f} F1 points {'above' if df1 > 0 else 'below'} "
                   f"random init (EM {dem:+.{digits}f})")


def _lang_order(langs: pd.Series) -> list[str]:
    order = sorted(set(langs) - {"all"})
    return order + (["all"] if "all" in set(langs) else [])
