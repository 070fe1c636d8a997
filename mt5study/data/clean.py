"""Cleaning, one language at a time, counting what each filter drops.

Filters, in order (each counts the documents it drops and the characters it removes):
  normalize       Unicode normal form (NFC/NFKC), CRLF -> LF, trailing spaces, blank-line runs
  control_chars   C0/C1 control characters except tab and newline
  boilerplate     lines found in many documents of the language (menus, cookie notices, headings)
  min_length      documents shorter than `min_chars` after the above
  duplicate       exact duplicates of an earlier document's cleaned text
  langid          documents whose py3langid language is not the source's language

`clean_language` streams one language from a source into an Arrow file in two passes (the first
also counts line frequencies on a sample), so a language never has to fit in memory.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

import pyarrow as pa

from mt5study.data.config import CleaningConfig

FILTERS = ("normalize", "control_chars", "boilerplate", "min_length", "duplicate", "langid")

DOC_SCHEMA = pa.schema([("id", pa.string()), ("lang", pa.string()), ("text", pa.string())])

# C0 and C1 controls and DEL, except \t and \n (\r is folded into \n by normalize).
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_TRAILING_WS = re.compile(r"[ \t]+\n")
_BLANK_RUNS = re.compile(r"\n{3,}")

# Language codes as sources name them -> codes py3langid may answer for that language.
# mC4 uses 'iw' (Hebrew) and 'fil' (Filipino); py3langid has no 'nb' but 'no'/'nn'; it tells
# Cantonese ('yue') and Wu ('wuu') from Mandarin, while zh sources mix them.
LANGID_EQUIVALENTS: dict[str, set[str]] = {
    "iw": {"he"}, "he": {"he"}, "fil": {"tl"}, "tl": {"tl"}, "jw": {"jv"},
    "nb": {"no", "nn"}, "no": {"no", "nn"}, "nn": {"nn", "no"},
    "zh": {"zh", "yue", "wuu"},
}


def normalize(text: str, form: str) -> str:
    """Unicode normal form plus whitespace tidying (line ends, trailing spaces, blank runs)."""
    if form != "none":
        text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _TRAILING_WS.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def remove_control_chars(text: str) -> str:
    return _CONTROL.sub("", text)


def langid_codes(lang: str, extra: dict[str, list[str]] | None = None) -> set[str] | None:
    """py3langid codes accepted for `lang`; None where py3langid cannot check it
    (romanised '-Latn' variants, 'und', languages outside its model)."""
    from py3langid.langid import _get_identifier  # the model that py3langid.classify uses

    if lang.lower().endswith("-latn") or lang == "und":
        return None
    base = re.split(r"[-_]", lang)[0].lower()
    codes = set(LANGID_EQUIVALENTS.get(base, {base})) | set((extra or {}).get(lang, []))
    known = set(_get_identifier().nb_classes)
    return codes if codes & known else None


def detect_language(text: str, chars: int) -> str:
    """py3langid's language for the first `chars` characters of a document."""
    import py3langid

    return py3langid.classify(text[:chars])[0]


def _line_key(line: str) -> int:
    return hash(line)  # per-process key: counted and looked up in the same worker


def _lines(text: str) -> set[str]:
    return {ln.strip() for ln in text.split("\n") if ln.strip()}


class _Writer:
    """Arrow IPC stream of documents, written in batches (datasets.Dataset.from_file reads it)."""

    def __init__(self, path: Path, batch: int = 256):
        self.path, self.batch, self.rows = path, batch, []
        self.sink = pa.OSFile(str(path), "wb")
        self.writer = pa.ipc.new_stream(self.sink, DOC_SCHEMA)

    def add(self, id_: str, lang: str, text: str) -> None:
        self.rows.append((id_, lang, text))
        if len(self.rows) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self.rows:
            cols = list(zip(*self.rows))
            self.writer.write_batch(pa.record_batch([pa.array(c, pa.string()) for c in cols], schema=DOC_SCHEMA))
            self.rows = []

    def close(self) -> None:
        self.flush()
        self.writer.close()
        self.sink.close()


def read_docs(path: Path, batch_rows: int = 1024) -> Iterator[tuple[str, str, str]]:
    """(id, lang, text) rows of a document Arrow stream file, read batch by batch."""
    with pa.memory_map(str(path)) as source:
        for batch in pa.ipc.open_stream(source):
            ids, langs, texts = (batch.column(i).to_pylist() for i in range(3))
            yield from zip(ids, langs, texts)


def empty_stats() -> dict[str, Any]:
    stats: dict[str, Any] = {"read": {"docs": 0, "chars": 0}}
    for name in FILTERS:
        stats[name] = {"docs": 0, "chars": 0}
    for name in ("normalize", "control_chars", "boilerplate"):  # character-level filters
        stats[name]["changed_docs"] = 0
    stats["kept"] = {"docs": 0, "chars": 0}
    return stats


def clean_documents(docs: Iterable[tuple[str, str]], lang: str, cfg: CleaningConfig, out: Path, work: Path) -> dict[str, Any]:
    """Clean (id, text) pairs of one language into the Arrow file `out`; returns the counts."""
    stats = empty_stats()
    stage1 = work / f"{out.stem}.stage1.arrow"
    lines_seen: Counter[int] = Counter()
    sampled = 0
    # Pass 1: character-level filters, line frequencies on the first documents.
    w = _Writer(stage1)
    for id_, text in docs:
        stats["read"]["docs"] += 1
        stats["read"]["chars"] += len(text)
        t1 = normalize(text, cfg.normalization)
        _count_chars(stats["normalize"], text, t1)
        t2 = remove_control_chars(t1) if cfg.remove_control_chars else t1
        _count_chars(stats["control_chars"], t1, t2)
        if sampled < cfg.boilerplate_sample_docs:
            lines_seen.update(_line_key(ln) for ln in _lines(t2))
            sampled += 1
        w.add(id_, lang, t2)
    w.close()
    threshold = max(cfg.boilerplate_min_docs, cfg.boilerplate_min_fraction * sampled)
    boiler = {k for k, c in lines_seen.items() if c >= threshold}
    stats["boilerplate_lines"] = len(boiler)
    del lines_seen

    # Pass 2: boilerplate lines, short documents, duplicates, language check.
    accept = langid_codes(lang, cfg.langid_accept) if cfg.langid else None
    stats["langid_checked"] = accept is not None
    detected: Counter[str] = Counter()
    seen: set[bytes] = set()
    content = hashlib.sha256()  # of the kept documents, in order
    w = _Writer(out)
    for id_, _, text in read_docs(stage1):
        if boiler:
            kept_lines = [ln for ln in text.split("\n") if not ln.strip() or _line_key(ln.strip()) not in boiler]
            t3 = _BLANK_RUNS.sub("\n\n", "\n".join(kept_lines)).strip()
            _count_chars(stats["boilerplate"], text, t3)
            text = t3
        if len(text) < cfg.min_chars or not text:
            _drop(stats["min_length"], text)
            continue
        if cfg.deduplicate:
            key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
            if key in seen:
                _drop(stats["duplicate"], text)
                continue
            seen.add(key)
        if accept is not None:
            found = detect_language(text, cfg.langid_chars)
            if found not in accept:
                detected[found] += 1
                _drop(stats["langid"], text)
                continue
        stats["kept"]["docs"] += 1
        stats["kept"]["chars"] += len(text)
        content.update(text.encode("utf-8") + b"\x00")
        w.add(id_, lang, text)
    w.close()
    stage1.unlink()
    stats["langid_dropped_as"] = dict(detected.most_common(5))
    stats["sha256"] = content.hexdigest()
    return stats


def _count_chars(row: dict[str, int], before: str, after: str) -> None:
    """Characters removed by a character-level filter (negative where NFKC expands)."""
    row["chars"] += len(before) - len(after)
    row["changed_docs"] += before != after


def _drop(row: dict[str, int], text: str) -> None:
    row["docs"] += 1
    row["chars"] += len(text)
