"""Every source of parallel text -> one flat record schema, and a report of what was read.

    {"src_lang", "tgt_lang", "source", "target", "key", "origin"}

`key` is the string that decides the split (prepare): the English side of the pair, so that one
msgid, or one FLORES sentence, is in the same split for every pair and direction.

Sources: `catalogs` (gettext, mt5study.translation.catalogs), `manpages` (aligned option
descriptions, mt5study.translation.manpages), `files` (TSV or JSON lines of pairs) and `hub`
(a standard set through `datasets`: WMT/OPUS records {"translation": {lang: text}}, or FLORES
columns sentence_<code>), read from the hub or from local files of the same schema.
"""

from __future__ import annotations

import glob
import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterator

from mt5study.paths import find
from mt5study.translation.config import LANGUAGES, FileSource, HubSource, SourceConfig, UnknownLanguageError

# FLORES-200 codes of the languages the study names (the set's own: language_Script).
FLORES_CODES: dict[str, str] = {
    "ar": "arb_Arab", "bg": "bul_Cyrl", "ca": "cat_Latn", "cs": "ces_Latn", "da": "dan_Latn", "de": "deu_Latn",
    "el": "ell_Grek", "en": "eng_Latn", "es": "spa_Latn", "et": "est_Latn", "eu": "eus_Latn", "fi": "fin_Latn",
    "fr": "fra_Latn", "gl": "glg_Latn", "he": "heb_Hebr", "hi": "hin_Deva", "hr": "hrv_Latn", "hu": "hun_Latn",
    "id": "ind_Latn", "it": "ita_Latn", "ja": "jpn_Jpan", "ko": "kor_Hang", "lt": "lit_Latn", "lv": "lvs_Latn",
    "nb": "nob_Latn", "nl": "nld_Latn", "pl": "pol_Latn", "pt": "por_Latn", "ro": "ron_Latn", "ru": "rus_Cyrl",
    "sk": "slk_Latn", "sl": "slv_Latn", "sr": "srp_Cyrl", "sv": "swe_Latn", "th": "tha_Thai", "tr": "tur_Latn",
    "uk": "ukr_Cyrl", "vi": "vie_Latn", "zh": "zho_Hans",
}


class SourceReadError(ValueError):
    """A file or set of pairs that cannot be read: names the file and line or record."""


def _lang(code: str, where: str) -> str:
    if code not in LANGUAGES:
        raise UnknownLanguageError(f"{where}: unknown language {code!r}; known: {sorted(LANGUAGES)}")
    return code


def _paths(pattern: str) -> list[Path]:
    full = find(pattern)
    matches = sorted(Path(p) for p in glob.glob(str(full)))
    if not matches:
        raise FileNotFoundError(f"no file matches {pattern} ({full})")
    return matches


# ----------------------------------------------------------------------------- files

def read_pair_file(path: Path, fmt: str | None, counts: Counter) -> Iterator[tuple[str, str, int]]:
    """(source, target, line number) of a TSV or JSON-lines file; a malformed line is an error."""
    fmt = fmt or ("jsonl" if path.suffix in (".jsonl", ".json") else "tsv" if path.suffix in (".tsv", ".txt") else None)
    if fmt is None:
        raise SourceReadError(f"{path}: cannot tell the format from the suffix; set format: tsv or jsonl")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise SourceReadError(f"{path}: not UTF-8 text: {e}") from e
    for n, line in enumerate(lines, 1):
        if not line.strip():
            counts["blank_lines"] += 1
            continue
        if fmt == "tsv":
            cols = line.split("\t")
            if len(cols) != 2:
                raise SourceReadError(f"{path}:{n}: expected 2 tab-separated columns, got {len(cols)}")
            yield cols[0], cols[1], n
        else:
            try:
                rec = json.loads(line)
                yield str(rec["source"]), str(rec["target"]), n
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise SourceReadError(f"{path}:{n}: expected a JSON object with source and target: {e}") from e


def load_files(cfg: FileSource, pairs: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records of the wanted directions: the file's own, its reverse, or none."""
    src, tgt = _lang(cfg.src_lang, f"files {cfg.path}: src_lang"), _lang(cfg.tgt_lang, f"files {cfg.path}: tgt_lang")
    counts: Counter = Counter()
    records = []
    for path in _paths(cfg.path):
        counts["files"] += 1
        for s, t, n in read_pair_file(path, cfg.format, counts):
            counts["pairs_read"] += 1
            english = s if src == "en" else t if tgt == "en" else s
            for a, b in pairs:
                if (a, b) == (src, tgt):
                    records.append(_record(a, b, s, t, english, f"files/{path.name}:{n}"))
                elif (a, b) == (tgt, src):
                    records.append(_record(a, b, t, s, english, f"files/{path.name}:{n}"))
    return records, {"kind": "files", "path": cfg.path, "languages": [src, tgt], **dict(counts)}


# ----------------------------------------------------------------------------- datasets

def _dataset(cfg: HubSource):
    import datasets

    if cfg.dataset is not None:
        return datasets.load_dataset(cfg.dataset, cfg.config, split=cfg.split, revision=cfg.revision)
    files = [str(p) for p in _paths(cfg.path)]
    suffix = Path(files[0]).suffix
    builder = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv", ".tsv": "csv"}.get(suffix)
    if builder is None:
        raise SourceReadError(f"{cfg.path}: unknown file type {suffix} (json, jsonl, parquet, csv)")
    kwargs = {"delimiter": "\t"} if suffix == ".tsv" else {}
    return datasets.load_dataset(builder, data_files=files, split="train", **kwargs)


def hub_rows(cfg: HubSource, ds: Any) -> Iterator[dict[str, str]]:
    """{our language code: text} per record, in either layout."""
    ours = {**{v: k for k, v in FLORES_CODES.items()}, **cfg.languages}
    name = cfg.dataset or cfg.path
    if cfg.layout == "translation":
        if "translation" not in ds.column_names:
            raise SourceReadError(f"{name}: layout translation needs a `translation` column, has {ds.column_names}")
        for i, rec in enumerate(ds["translation"]):
            if not isinstance(rec, dict):
                raise SourceReadError(f"{name}: record {i}: translation is not a mapping of language to text")
            yield {ours.get(k, k): v for k, v in rec.items() if isinstance(v, str)}
    else:
        cols = {c[len("sentence_"):]: c for c in ds.column_names if c.startswith("sentence_")}
        if len(cols) < 2:
            raise SourceReadError(f"{name}: layout flores needs two sentence_<code> columns, has {ds.column_names}")
        for rec in ds:
            yield {ours.get(code, code): rec[col] for code, col in cols.items() if isinstance(rec[col], str)}


def load_hub(cfg: HubSource, pairs: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    ds = _dataset(cfg)
    counts: Counter = Counter()
    records = []
    name = cfg.dataset or cfg.path
    for i, row in enumerate(hub_rows(cfg, ds)):
        counts["rows"] += 1
        for a, b in pairs:
            if a in row and b in row:
                english = row.get("en", row[a])
                records.append(_record(a, b, row[a], row[b], english, f"hub/{name}/{cfg.split}:{i}"))
                counts[f"{a}-{b}"] += 1
    return records, {"kind": "hub", "dataset": cfg.dataset, "config": cfg.config, "path": cfg.path,
                     "split": cfg.split, "revision": cfg.revision, "layout": cfg.layout, **dict(counts)}


def _record(src: str, tgt: str, source: str, target: str, english: str, origin: str) -> dict[str, Any]:
    return {"src_lang": src, "tgt_lang": tgt, "source": source, "target": target, "key": english, "origin": origin}


# ----------------------------------------------------------------------------- all sources

def load(sources: list[SourceConfig], pairs: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Records of every source for the wanted pairs, and one report per source."""
    from mt5study.translation import catalogs, manpages

    records, reports = [], []
    for cfg in sources:
        reader = {"catalogs": catalogs.load, "manpages": manpages.load, "files": load_files, "hub": load_hub}[cfg.kind]
        recs, report = reader(cfg, pairs)
        report["records"] = dict(Counter(f"{r['src_lang']}-{r['tgt_lang']}" for r in recs))
        records.extend(recs)
        reports.append(report)
    return records, reports
