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
    if "mix_block" in manifest:  # a sharded output: languages are mixed as they are read, in exact quotas
        from mt5study.data.stream import apportion

        quota = apportion(manifest["split_probabilities"]["train"], manifest["mix_block"])
        counts = {lang: {**c, "sampled": {"train": quota.get(lang, 0)}} for lang, c in counts.items()}
        sampled_total = manifest["mix_block"]
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


CATALOG_COLUMNS = ("catalogs_read", "catalogs_bad", "messages", "untranslated", "identical", "format_mismatch",
                   "heldout", "lines", "documents")


def catalog_table(manifest: dict[str, Any]) -> pd.DataFrame:
    """Per language, what the gettext catalogs gave the corpus (source.catalogs): catalogs read and
    unreadable, messages, those left out (untranslated, identical, format mismatch, in the translation
    study's held-out splits), lines kept and documents; empty when the ETL read no catalogs."""
    counts = manifest.get("source", {}).get("catalog_counts") or {}
    rows = {lang: {k: c.get(k, 0) for k in CATALOG_COLUMNS} for lang, c in sorted(counts.items())}
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(CATALOG_COLUMNS))


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


# ----------------------------------------------------------------------------- sharded runs

MC4_TOKENS = 6.3e12  # mC4's tokens in 101 languages (Xue et al. 2021)


def task_table(manifest: dict[str, Any], out: str | Path | None = None) -> pd.DataFrame:
    """Per task of a sharded run: shards, documents read and kept, tokens, examples, and (with
    `out`) the seconds the task spent in the clean and encode stages."""
    t = pd.DataFrame(manifest["per_task"]).set_index("task")
    if out is not None:
        from mt5study.data.engine import task_seconds

        for stage in ("clean", "encode"):
            t[f"{stage}_s"] = pd.Series(task_seconds(out, stage))
        busy = t["clean_s"] + t["encode_s"]
        t["tokens_per_s"] = (t["tokens"] / busy).where(busy > 0)
    return t


def merged_totals(manifest: dict[str, Any]) -> pd.Series:
    """Counts summed over languages: what the per-task rows add up to."""
    c = manifest["counts"].values()
    return pd.Series({
        "shards": sum(r["shards"] for r in c), "read_docs": sum(r["read"]["docs"] for r in c),
        "kept_docs": sum(r["kept"]["docs"] for r in c), "duplicates": sum(r["duplicate"]["docs"] for r in c),
        "tokens": sum(sum(r["tokens"].values()) for r in c), "examples": sum(sum(r["examples"].values()) for r in c),
    })


def mc4_projection(tokens_per_s_per_task: float, efficiency: float,
                   nodes: tuple[int, ...] = (1, 8, 64, 256), tasks_per_node: int = 64,
                   inputs_length: int = 1024, clean_bytes_per_token: float | None = None) -> pd.DataFrame:
    """Time and disk to run the ETL over all of mC4 on N nodes, from a measured rate per task.

    Time: MC4_TOKENS / (rate * tasks_per_node * N * efficiency), efficiency the measured one at
    two tasks, assumed to hold (shared storage and the single-task tokenizer and merge stages
    are not in it). Disk: the example shards at mT5's lengths, int32 inputs and targets per raw
    chunk, plus the cleaned text kept between stages (bytes per token measured on this run).
    """
    from mt5study.data.corruption import span_corruption_lengths

    raw, targets = span_corruption_lengths(inputs_length)
    example_bytes = MC4_TOKENS / raw * (inputs_length + targets) * 4
    clean = MC4_TOKENS * (clean_bytes_per_token or 0.0)
    rows = []
    for n in nodes:
        seconds = MC4_TOKENS / (tokens_per_s_per_task * tasks_per_node * n * efficiency)
        rows.append({"nodes": n, "tasks": n * tasks_per_node, "hours": seconds / 3600, "days": seconds / 86400,
                     "examples_TB": example_bytes / 1e12, "clean_text_TB": clean / 1e12,
                     "disk_TB": (example_bytes + clean) / 1e12})
    return pd.DataFrame(rows).set_index("nodes")
