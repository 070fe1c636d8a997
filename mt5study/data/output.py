"""The ETL output folder: counts and hashes for the manifest, and writing it atomically.

OUT/manifest.json is written last and marks a complete output; everything is built in a
hidden sibling folder that is renamed to OUT at the end, so a crash never leaves a folder that
looks complete, and a completed one is only replaced when asked.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "validation")
LABEL_PAD = -100  # ignored by the loss; only used if an example is ever shorter than targets_length


class ETLError(RuntimeError):
    """The ETL cannot produce a dataset (empty language, occupied output folder, ...)."""


def document_ranges(langs: list[str], split_counts: dict[str, dict[str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    """[start, stop) rows of each (language, split) in the documents ordered language, then split."""
    ranges, start = {}, 0
    for lang in langs:
        for split in SPLITS:
            n = split_counts[lang][split]
            ranges[(lang, split)] = (start, start + n)
            start += n
    return ranges


def language_counts(stats, langs, split_counts, tokens, ranges, saved) -> dict[str, dict[str, Any]]:
    """Per-language counts: read, each filter, kept, split, tokens, examples, sampled."""
    table = tokens.with_format("arrow")
    n_tok = table["n_tokens"].to_numpy()  # one int64 per document
    n_chr = table["chars"].to_numpy()
    doc_range = document_ranges(langs, split_counts)
    sampled = {s: _value_counts(saved[s]) for s in SPLITS}
    out = {}
    for lang, s in stats.items():
        row = {k: v for k, v in s.items() if k not in ("bad_records", "sha256")}
        if lang in langs:
            row["documents"] = split_counts[lang]
            row["tokens"] = {sp: int(n_tok[slice(*doc_range[(lang, sp)])].sum()) for sp in SPLITS}
            row["characters"] = {sp: int(n_chr[slice(*doc_range[(lang, sp)])].sum()) for sp in SPLITS}
            row["examples"] = {sp: ranges[(sp, lang)][1] - ranges[(sp, lang)][0] for sp in SPLITS}
            row["sampled"] = {sp: int(sampled[sp].get(lang, 0)) for sp in SPLITS}
        out[lang] = row
    return out


def _value_counts(ds) -> dict[str, int]:
    """Examples per language in a split (Arrow's value_counts, batch by batch)."""
    import pyarrow.compute as pc

    counts: dict[str, int] = {}
    for batch in ds.select_columns(["lang"]).with_format("arrow").iter(batch_size=65536):
        for item in pc.value_counts(batch["lang"]).to_pylist():
            counts[item["values"]] = counts.get(item["values"], 0) + item["counts"]
    return counts


def counts_total(counts, split: str) -> int:
    return int(sum(c.get("sampled", {}).get(split, 0) for c in counts.values()))


def counts_padding(ds, targets_len: int) -> int:
    """Examples with any padding (0 at T5's lengths; kept in the manifest as a check)."""
    import pyarrow.compute as pc

    padded = 0
    for batch in ds.select_columns(["labels"]).with_format("arrow").iter(batch_size=65536):
        labels = pc.list_flatten(batch["labels"]).to_numpy().reshape(-1, targets_len)
        padded += int((labels == LABEL_PAD).any(axis=1).sum())
    return padded


def content_hash(ds) -> str:
    """sha256 of a split's input_ids, labels and lang, in order (independent of file layout)."""
    import pyarrow.compute as pc

    h = hashlib.sha256()
    for batch in ds.with_format("arrow").iter(batch_size=8192):
        h.update(pc.list_flatten(batch["input_ids"]).to_numpy().astype("<i4").tobytes())
        h.update(pc.list_flatten(batch["labels"]).to_numpy().astype("<i4").tobytes())
        h.update("\n".join(batch["lang"].to_pylist()).encode("utf-8"))
    return h.hexdigest()


def write_documents_table(tokens, split_counts, langs, path: Path) -> None:
    """documents.parquet: id, lang, split, chars and tokens (EOS included) of every document."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = tokens.select_columns(["id", "lang", "chars", "n_tokens"]).with_format("arrow")[:]
    split = np.empty(len(t), dtype=object)
    for (lang, sp), (a, b) in document_ranges(langs, split_counts).items():
        split[a:b] = sp
    table = pa.table({"id": t["id"], "lang": t["lang"], "split": pa.array(split.tolist(), pa.string()),
                      "chars": t["chars"], "tokens": t["n_tokens"]})
    pq.write_table(table, path)


def is_complete(folder: Path) -> bool:
    """An ETL output is complete when its manifest.json exists (written last)."""
    return (Path(folder) / "manifest.json").is_file()


def check_target(out: Path, overwrite: bool) -> None:
    """Refuse an occupied output folder: a completed ETL output unless overwrite, and anything
    else that is not an empty folder always (overwrite never deletes a folder of other files)."""
    if not out.exists():
        return
    if is_complete(out):
        if not overwrite:
            raise ETLError(f"{out} already holds a completed ETL output (manifest.json); "
                           "pass overwrite=True (CLI: --overwrite) to replace it")
        return
    if not out.is_dir() or any(out.iterdir()):
        raise ETLError(f"{out} exists and is not an empty folder or an ETL output; refusing to write there")


def remove_stale_temporaries(out: Path) -> None:
    """Temporary folders of runs that were killed (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def move_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an existing out (overwrite) is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
