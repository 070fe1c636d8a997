"""The shard plan of a sharded ETL run: which input files make each shard, and their fingerprints.

A shard is a fixed group of one language's input files (engine.files_per_shard of them), named
`<lang>-<index>`; tasks take shards round-robin, so the shards, and everything computed per
shard, do not depend on the number of tasks. The plan is written once into the run's engine
folder; a resume compares the files as they are now against it (`InputsChangedError`).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from mt5study.data.config import ETLConfig
from mt5study.data.output import ETLError
from mt5study.data.sources import SourceError, make_source, stable_seed

PLAN_FORMAT = "mt5study-etl-plan/1"


class InputsChangedError(ETLError):
    """Input files differ from those recorded when the run started (resume after an edit)."""


class ShardReadError(ETLError):
    """A shard's input cannot be read; its task fails, the other tasks go on."""


def fingerprint(path: str) -> list[int]:
    """[bytes, mtime in ns] of a file: what tells a file edited in place from the one planned."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns]


def language_files(cfg: ETLConfig) -> dict[str, list[str]]:
    """Input files per language, in a stable order (manpages: the seeded sample of pages)."""
    src = cfg.source
    source = make_source(src)
    if src.kind == "mc4":
        if src.mc4.data_files is None:  # a hub stream cannot be split by file: one shard per language
            return {lang: [f"hub:{src.mc4.dataset}/{lang}"] for lang in src.languages or []}
        return {lang: source._files(lang) for lang in src.languages or []}  # noqa: SLF001 (glob per language)
    if src.kind == "files":
        found = {k: [str(p) for p in v] for k, v in source._files().items()}  # noqa: SLF001
    else:
        found = source._page_files()  # noqa: SLF001
    langs = src.languages if src.languages is not None else sorted(found)
    missing = [lang for lang in langs if lang not in found]
    if missing:
        raise SourceError(f"{src.kind} source: languages {missing} not found (found: {sorted(found)})")
    out = {}
    for lang in langs:
        files = list(found[lang])
        if src.kind == "manpages":  # the same seeded sample of pages as ManpagesReader.documents
            take = min(max(1, round(src.fraction * len(files))), src.max_docs_per_language or len(files))
            if take < len(files):
                rng = np.random.default_rng([cfg.seed, stable_seed(lang)])
                files = [files[i] for i in sorted(rng.choice(len(files), size=take, replace=False))]
        out[lang] = files
    return out


def make_plan(cfg: ETLConfig) -> dict[str, Any]:
    """Shards (id, language, files with fingerprints) and a per-shard document cap."""
    per = cfg.engine.files_per_shard
    shards = []
    for lang, files in language_files(cfg).items():
        groups = [files[i:i + per] for i in range(0, len(files), per)]
        limit = cfg.source.max_docs_per_language
        # manpages apply the cap when sampling pages; streams share it out over the shards
        cap = None if limit is None or cfg.source.kind == "manpages" else math.ceil(limit / len(groups))
        for k, group in enumerate(groups):
            shards.append({
                "id": f"{lang}-{k:05d}", "lang": lang, "cap": cap,
                "files": [{"path": f, "stat": None if f.startswith("hub:") else fingerprint(f)} for f in group],
            })
    if not shards:
        raise SourceError(f"{cfg.source.kind} source: no input files")
    if cfg.source.catalogs is not None:  # the language-specific corpus: one shard per language
        from mt5study.data.catalog_text import CatalogTextReader

        reader = CatalogTextReader(cfg.source.catalogs)
        for lang in sorted({s["lang"] for s in shards}):
            files = reader.files(lang)
            if files:
                shards.append({"id": f"{lang}-catalogs", "lang": lang, "cap": None, "kind": "catalogs",
                               "files": [{"path": str(f), "stat": fingerprint(str(f))} for f in files]})
    return {"format": PLAN_FORMAT, "shards": shards}


def changed_files(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Files added, removed or changed (size or mtime) between two plans."""
    a = {f["path"]: f["stat"] for s in old["shards"] for f in s["files"]}
    b = {f["path"]: f["stat"] for s in new["shards"] for f in s["files"]}
    out = [f"{p}: removed" for p in sorted(set(a) - set(b))] + [f"{p}: added" for p in sorted(set(b) - set(a))]
    out += [f"{p}: changed ({a[p][0]} -> {b[p][0]} bytes, mtime {a[p][1]} -> {b[p][1]})"
            for p in sorted(set(a) & set(b)) if a[p] != b[p]]
    return out


def load_or_write_plan(cfg: ETLConfig, folder: Path) -> dict[str, Any]:
    """The plan in folder/plan.json; a resume checks the inputs against it first."""
    path = folder / "plan.json"
    new = make_plan(cfg)
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        diff = changed_files(old, new)
        if diff:
            raise InputsChangedError(
                f"input files changed since this run started ({path}): " + "; ".join(diff[:5])
                + (f" (+{len(diff) - 5} more)" if len(diff) > 5 else "")
                + "; start a new run (another --out, or --overwrite)")
        return old
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(new, indent=1), encoding="utf-8")
    os.replace(tmp, path)
    return new


def check_shard_files(shard: dict[str, Any]) -> None:
    """Before reading a shard: each file still exists (ShardReadError) and is unchanged
    since planning (InputsChangedError)."""
    for f in shard["files"]:
        if f["stat"] is None:
            continue
        try:
            now = fingerprint(f["path"])
        except OSError as e:
            raise ShardReadError(f"shard {shard['id']}: cannot read {f['path']}: {e}") from e
        if now != f["stat"]:
            raise InputsChangedError(f"shard {shard['id']}: {f['path']} changed since planning "
                                     f"({f['stat']} -> {now} [bytes, mtime_ns])")


def task_shards(plan: dict[str, Any], rank: int, tasks: int) -> list[dict[str, Any]]:
    """Shards of task `rank` out of `tasks` (round-robin over the plan's order)."""
    return plan["shards"][rank::tasks]
