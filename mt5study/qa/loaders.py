"""SQuAD-format QA sets: hub datasets through `datasets`, local JSON / JSON-lines, the embedded set.

Every source ends as flat records, the schema of the Hugging Face copies of SQuAD, XQuAD, MLQA
and TyDi QA GoldP (`secondary_task`):

    {"id": str, "lang": str, "title": str, "question": str, "context": str,
     "answers": {"text": [str, ...], "answer_start": [int, ...]}}

Local files may also hold SQuAD's nested layout (`{"data": [{"title", "paragraphs": [{"context",
"qas": [{"id", "question", "answers": [{"text", "answer_start"}]}]}]}]}`), which is also the
layout of the original XQuAD, MLQA and TyDi GoldP downloads.

Checks, each counted per split and language, never silently repaired:
- malformed record (a field missing or of the wrong type): dropped, with file and record;
- empty answer (no answer, or only empty texts; e.g. SQuAD 2.0's unanswerable): dropped;
- answer not found at `answer_start` in the context: that answer is not used (counted as
  some_answers_not_at_start); a question left with no located answer is dropped
  (answer_not_at_start): offsets are what the windows and labels are built from.
"""

from __future__ import annotations

import glob
import gzip
import json
import zlib
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mt5study.paths import find
from mt5study.qa.config import QASet, QASource

# TyDi QA ids start with the language's English name (e.g. "finnish-123...-0").
TYDI_LANGS = {
    "arabic": "ar", "bengali": "bn", "english": "en", "finnish": "fi", "indonesian": "id",
    "japanese": "ja", "korean": "ko", "russian": "ru", "swahili": "sw", "telugu": "te", "thai": "th",
}
MAX_MESSAGES = 20  # bad-record messages kept per split in the report
FIELDS = "string `context` and `question`, and `answers` with `text` and `answer_start`"


class QADataError(ValueError):
    """A QA set that cannot be read as asked: a file none of whose records has the SQuAD fields,
    or a requested language with no record in a split."""


class Bad:
    """Counts of dropped records by reason, per language, with the first messages."""

    def __init__(self) -> None:
        self.counts: dict[str, Counter] = defaultdict(Counter)
        self.messages: list[str] = []

    def add(self, lang: str, reason: str, message: str | None = None) -> None:
        self.counts[lang][reason] += 1
        if message and len(self.messages) < MAX_MESSAGES:
            self.messages.append(message)


# ----------------------------------------------------------------------------- reading records

def _flat_answers(answers: Any) -> dict[str, list] | None:
    """{"text": [...], "answer_start": [...]} from either answer layout; None if malformed."""
    if isinstance(answers, dict):
        texts, starts = answers.get("text"), answers.get("answer_start")
    elif isinstance(answers, list) and all(isinstance(a, dict) for a in answers):
        texts = [a.get("text") for a in answers]
        starts = [a.get("answer_start") for a in answers]
    else:
        return None
    if not isinstance(texts, list) or not isinstance(starts, list) or len(texts) != len(starts):
        return None
    if not all(isinstance(t, str) for t in texts) or not all(isinstance(s, int) and not isinstance(s, bool) for s in starts):
        return None
    return {"text": list(texts), "answer_start": list(starts)}


def nested_to_flat(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Flat records of a SQuAD-layout document ({"data": [article, ...]})."""
    for article in doc.get("data", []):
        for p, paragraph in enumerate(article.get("paragraphs", [])):
            for q, qa in enumerate(paragraph.get("qas", [])):
                yield {"id": qa.get("id", f"{article.get('title', '')}/{p}/{q}"), "title": article.get("title", ""),
                       "context": paragraph.get("context"), "question": qa.get("question"),
                       "answers": qa.get("answers"), **({"lang": qa["lang"]} if "lang" in qa else {})}


def read_file(path: Path) -> Iterator[tuple[str, Any]]:
    """(where, raw record) of one local file: nested SQuAD .json, a JSON list, or JSON lines."""
    name = path.name
    opener = gzip.open if name.endswith(".gz") else open
    if ".jsonl" in name:
        with opener(path, "rt", encoding="utf-8") as f:
            for n, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield f"{path}:{n}", json.loads(line)
                    except json.JSONDecodeError as e:
                        yield f"{path}:{n}", ValueError(f"malformed JSON: {e.msg} at column {e.colno}")
        return
    with opener(path, "rt", encoding="utf-8") as f:
        doc = json.load(f)
    if isinstance(doc, dict) and isinstance(doc.get("data"), list) and doc["data"] and "paragraphs" in doc["data"][0]:
        records: Iterable[Any] = nested_to_flat(doc)
    elif isinstance(doc, dict) and isinstance(doc.get("data"), list):
        records = doc["data"]
    elif isinstance(doc, list):
        records = doc
    else:
        raise ValueError(f"{path}: neither SQuAD's {{'data': [...]}} layout nor a list of records")
    for n, rec in enumerate(records):
        yield f"{path}[{n}]", rec


def _lang_of(rec: dict[str, Any], fixed: str | None) -> str | None:
    if fixed:
        return fixed
    if isinstance(rec.get("lang"), str):
        return rec["lang"]
    prefix = str(rec.get("id", "")).split("-", 1)[0].lower()
    return TYDI_LANGS.get(prefix)


def normalize_record(where: str, rec: Any, lang: str | None, bad: Bad) -> dict[str, Any] | None:
    """A checked flat record, or None (counted in `bad`)."""
    if isinstance(rec, Exception) or not isinstance(rec, dict):
        bad.add(lang or "?", "malformed", f"{where}: {rec if isinstance(rec, Exception) else 'not an object'}")
        return None
    lang = _lang_of(rec, lang)
    if lang is None:
        bad.add("?", "no_language", f"{where}: no language (set `lang` on the set, or a `lang` field)")
        return None
    fields = {k: rec.get(k) for k in ("context", "question")}
    answers = _flat_answers(rec.get("answers"))
    if answers is None or not all(isinstance(v, str) for v in fields.values()):
        bad.add(lang, "malformed", f"{where}: needs {FIELDS}")
        return None
    keep = [(t, s) for t, s in zip(answers["text"], answers["answer_start"]) if t.strip()]
    if not keep:
        bad.add(lang, "empty_answer")
        return None
    located = [(t, s) for t, s in keep if fields["context"][s: s + len(t)] == t]
    if not located:
        bad.add(lang, "answer_not_at_start", f"{where}: answer {keep[0][0]!r} not at offset {keep[0][1]} of the context")
        return None
    if len(located) < len(keep):
        bad.add(lang, "some_answers_not_at_start")  # the question stays, with its located answers
    return {"id": str(rec.get("id", where)), "lang": lang, "title": str(rec.get("title") or ""),
            "question": fields["question"], "context": fields["context"],
            "answers": {"text": [t for t, _ in located], "answer_start": [s for _, s in located]}}


# ----------------------------------------------------------------------------- sets and sources

def _expand(s: QASet, languages: list[str] | None) -> list[tuple[QASet, str | None]]:
    """One set per language when `{lang}` appears in its config or path."""
    template = f"{s.config or ''}{s.path or ''}"
    if "{lang}" not in template:
        return [(s, s.lang)]
    if not languages:
        raise ValueError(f"QA set {s.dataset or s.path}: `{{lang}}` needs source.languages")
    return [(s.model_copy(update={"config": s.config.format(lang=l) if s.config else None,
                                  "path": s.path.format(lang=l) if s.path else None}), s.lang or l)
            for l in languages]


def raw_records(s: QASet) -> Iterator[tuple[str, Any]]:
    """(where, raw record) of one set: local files (sorted glob) or a hub dataset split."""
    if s.path is not None:
        pattern = str(find(s.path))
        files = sorted(glob.glob(pattern))
        if not files:
            raise FileNotFoundError(f"QA set: no file matches {pattern}")
        for f in files:
            yield from read_file(Path(f))
        return
    import datasets

    kwargs: dict[str, Any] = {"split": s.split}
    if s.revision:
        kwargs["revision"] = s.revision
    try:
        ds = datasets.load_dataset(s.dataset, s.config, **kwargs)
    except Exception as e:
        raise RuntimeError(f"QA set {s.dataset} [{s.config}] split {s.split}: cannot load: {type(e).__name__}: {e}") from e
    for n, rec in enumerate(ds):
        yield f"{s.dataset}[{s.config}]/{s.split}[{n}]", rec


def load_split(sets: list[QASet], languages: list[str] | None, limit: int | None, seed: int,
               split: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Checked records of a split from its sets, at most `limit` per language (a seeded sample)."""
    bad = Bad()
    by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in sets:
        for one, lang in _expand(s, languages):
            usable, first_problem = 0, None
            for where, rec in raw_records(one):
                before = sum(c["malformed"] for c in bad.counts.values())
                ex = normalize_record(where, rec, lang, bad)
                if ex is not None:
                    usable += 1
                    if not languages or ex["lang"] in languages:
                        by_lang[ex["lang"]].append(ex)
                elif first_problem is None and sum(c["malformed"] for c in bad.counts.values()) > before:
                    first_problem = bad.messages[-1] if bad.messages else where
            if not usable and first_problem is not None:
                raise QADataError(f"QA set {one.path or one.dataset}: no record has the fields of a SQuAD-format "
                                  f"record ({FIELDS}); first: {first_problem}")
    # Every requested language is scored, so each needs validation records (training may be one
    # language only: zero-shot transfer from SQuAD's English).
    missing = sorted(set(languages or []) - set(by_lang)) if split == "validation" else []
    if missing:
        found = sorted(set(by_lang) | {k for k in bad.counts if k != "?"})
        raise QADataError(f"QA {split} split: no usable record in language(s) {missing} of source.languages "
                          f"(languages found: {found or 'none'}); sets: {[s.path or s.dataset for s in sets]}")
    return _limit(by_lang, limit, seed, split, bad)


def _limit(by_lang: dict[str, list[dict[str, Any]]], limit: int | None, seed: int, split: str,
           bad: Bad) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    out, report = [], {"languages": {}, "messages": bad.messages}
    for lang in sorted(set(by_lang) | set(bad.counts)):
        rows = by_lang.get(lang, [])
        if limit is not None and len(rows) > limit:
            rng = np.random.default_rng([seed, zlib.crc32(f"{split}/{lang}".encode())])
            rows = [rows[i] for i in sorted(rng.choice(len(rows), size=limit, replace=False))]
        out.extend(rows)
        report["languages"][lang] = {"kept": len(rows), "read": len(by_lang.get(lang, [])), **dict(bad.counts.get(lang, {}))}
    return out, report


def load(source: QASource, seed: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """{"train": [...], "validation": [...]} of checked records, and what was counted."""
    if source.kind == "manpages":
        from mt5study.qa import manpages

        built, build_report = manpages.build(source, seed)
        report: dict[str, Any] = {"kind": "manpages", "build": build_report}
        splits = {}
        for split, limit in (("train", source.max_train_per_language), ("validation", source.max_validation_per_language)):
            bad = Bad()
            by_lang: dict[str, list[dict[str, Any]]] = defaultdict(list)
            for n, rec in enumerate(built[split]):
                ex = normalize_record(f"{split}[{n}]", rec, rec["lang"], bad)
                if ex is not None:
                    by_lang[ex["lang"]].append(ex)
            splits[split], report[split] = _limit(by_lang, limit, seed, split, bad)
        return splits, report
    splits, report = {}, {"kind": source.kind}
    for split, sets, limit in (("train", source.train, source.max_train_per_language),
                               ("validation", source.validation, source.max_validation_per_language)):
        splits[split], report[split] = load_split(sets, source.languages, limit, seed, split)
    return splits, report
