"""Tables and figures of an ETL output folder (for notebooks/01_etl.ipynb and reports).

Everything here reads OUT/manifest.json, OUT/documents.parquet, OUT/dataset and OUT/tokenizer:
nothing is recomputed from the source.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mt5study.data.clean import FILTERS


def load_manifest(out: str | Path) -> dict[str, Any]:
    from mt5study.records import read_json

    return read_json(Path(out) / "manifest.json")


def language_table(manifest: dict[str, Any]) -> pd.DataFrame:
    """One row per language: documents and characters read and kept, tokens, examples,
    natural share, sampling probability and the share actually sampled into train."""
    counts = manifest["counts"]
    sampled_total = max(sum(c.get("sampled", {}).get("train", 0) for c in counts.values()), 1)
    rows = []
    for lang, c in sorted(counts.items()):
        kept = lang in manifest["languages"]
        tokens = sum(c["tokens"].values()) if kept else 0
        chars = sum(c["characters"].values()) if kept else 0
        rows.append({
            "lang": lang,
            "docs_read": c["read"]["docs"],
            "chars_read": c["read"]["chars"],
            "docs_kept": c["kept"]["docs"],
            "chars_kept": c["kept"]["chars"],
            "tokens": tokens,
            "tokens_per_char": tokens / chars if chars else np.nan,
            "train_examples": c.get("examples", {}).get("train", 0),
            "natural_share": manifest["natural_shares"].get(lang, 0.0),
            "probability": manifest["probabilities"].get(lang, 0.0),
            "sampled_share": c.get("sampled", {}).get("train", 0) / sampled_total,
        })
    return pd.DataFrame(rows).set_index("lang")


def filter_table(manifest: dict[str, Any], unit: str = "docs") -> pd.DataFrame:
    """Documents (unit='docs') or characters (unit='chars') each filter removed, per language."""
    rows = {}
    for lang, c in sorted(manifest["counts"].items()):
        rows[lang] = {"read": c["read"][unit], **{f: c[f][unit] for f in FILTERS}, "kept": c["kept"][unit]}
    return pd.DataFrame.from_dict(rows, orient="index")


def shares_long(manifest: dict[str, Any]) -> pd.DataFrame:
    """Natural share, sampling probability and sampled share per language, long format."""
    t = language_table(manifest)
    t = t[t.index.isin(manifest["languages"])]
    long = t[["natural_share", "probability", "sampled_share"]].reset_index().melt(
        id_vars="lang", var_name="kind", value_name="share")
    long["kind"] = long["kind"].map({
        "natural_share": "natural (α=1)",
        "probability": f"probability (α={manifest['alpha']})",
        "sampled_share": "sampled (train)",
    })
    return long


def plot_shares(manifest: dict[str, Any], ax=None):
    """Bar chart of natural versus sampled language shares."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = shares_long(manifest)
    order = (language_table(manifest).loc[manifest["languages"], "natural_share"]
             .sort_values(ascending=False).index.tolist())
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(order)), 3.5))
    sns.barplot(data=data, x="lang", y="share", hue="kind", order=order, ax=ax)
    ax.set(xlabel="language", ylabel="share of documents / examples",
           title=f"Natural versus temperature-sampled shares (α={manifest['alpha']})")
    sns.move_legend(ax, "upper left", bbox_to_anchor=(1.0, 1.0), title=None)
    return ax


def documents(out: str | Path) -> pd.DataFrame:
    """documents.parquet: id, lang, split, chars and tokens of every kept document."""
    return pd.read_parquet(Path(out) / "documents.parquet")


def plot_token_lengths(out: str | Path, ax=None):
    """Distribution of document lengths in tokens, per language (log scale)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    docs = documents(out)
    order = docs.groupby("lang")["tokens"].median().sort_values(ascending=False).index.tolist()
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(order)), 3.5))
    sns.boxplot(data=docs, x="lang", y="tokens", order=order, ax=ax, fliersize=1)
    ax.set(yscale="log", xlabel="language", ylabel="tokens per document (EOS included)",
           title="Document length in tokens")
    return ax


def fertility(manifest: dict[str, Any]) -> pd.Series:
    """Tokens per character of each kept language (tokenizer fertility on its own text)."""
    t = language_table(manifest)
    return t.loc[manifest["languages"], "tokens_per_char"].sort_values()


def plot_fertility(manifest: dict[str, Any], ax=None):
    import matplotlib.pyplot as plt
    import seaborn as sns

    f = fertility(manifest)
    if ax is None:
        _, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(f)), 3.0))
    sns.barplot(x=f.index, y=f.values, ax=ax, color="tab:blue")
    ax.set(xlabel="language", ylabel="tokens per character",
           title=f"Tokenizer fertility (vocabulary {manifest['vocab_size']})")
    return ax


def span_examples(out: str | Path, n: int = 3, split: str = "train", seed: int = 0) -> pd.DataFrame:
    """A few examples decoded with the output's tokenizer: inputs with sentinels, targets."""
    import datasets

    from mt5study.data.tokenizer import load_tokenizer

    ds = datasets.load_from_disk(str(Path(out) / "dataset"))[split]
    tok = load_tokenizer(Path(out) / "tokenizer")
    rng = np.random.default_rng(seed)
    rows = []
    for i in sorted(rng.choice(len(ds), size=min(n, len(ds)), replace=False).tolist()):
        ex = ds[i]
        labels = [t for t in ex["labels"] if t >= 0]
        rows.append({"row": i, "lang": ex["lang"], "inputs": tok.decode(ex["input_ids"]), "targets": tok.decode(labels)})
    return pd.DataFrame(rows).set_index("row")
