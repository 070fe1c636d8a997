"""Where documents come from: one interface, three sources chosen by `source.kind`.

- `manpages`: translated Linux manual pages (Debian `manpages`, `manpages-de`, ...), rendered to
  plain text with groff, one document per page and language;
- `mc4`: mC4 through Hugging Face `datasets`, streamed per language configuration;
- `files`: a local folder of per-language JSON-lines or text files.

A source lists its languages and yields `Document`s of one language at a time, so the ETL can
clean languages in parallel worker processes. Bad records (malformed JSON, non-UTF-8 bytes, a
truncated gzip) are skipped and counted in a `BadRecords`, or raise `SourceError`; either way
the message names the file and line.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from mt5study.data.config import FilesSource, MC4Source, ManpagesSource, SourceConfig


class SourceError(ValueError):
    """A source that cannot be read as configured; the message names the file and line."""


@dataclass(frozen=True)
class Document:
    id: str  # where the text came from: file:line, a URL, a manual page path
    lang: str
    text: str


@dataclass
class BadRecords:
    """Records skipped under `on_bad_record: skip`: a count and the first messages."""

    policy: str = "skip"
    count: int = 0
    messages: list[str] = field(default_factory=list)
    max_messages: int = 20

    def report(self, message: str) -> None:
        if self.policy == "error":
            raise SourceError(message)
        self.count += 1
        if len(self.messages) < self.max_messages:
            self.messages.append(message)


def make_source(cfg: SourceConfig) -> "Source":
    """The source that `source.kind` names, with the catalogs' text when `source.catalogs` is set."""
    if cfg.kind == "manpages":
        main: Source = ManpagesReader(cfg.manpages)
    elif cfg.kind == "mc4":
        main = MC4Reader(cfg.mc4)
    else:
        assert cfg.files is not None  # checked by SourceConfig
        main = FilesReader(cfg.files)
    if cfg.catalogs is None:
        return main
    from mt5study.data.catalog_text import WithCatalogs  # imports the translation package

    return WithCatalogs(main, cfg.catalogs)


class Source:
    """Interface: languages found, documents of one language, and a record for the manifest."""

    kind = "source"

    def languages(self) -> list[str]:
        raise NotImplementedError

    def documents(self, lang: str, limit: int | None, seed: int, bad: BadRecords,
                  fraction: float = 1.0) -> Iterator[Document]:
        """Documents of `lang`: a seeded `fraction` of them, at most `limit`."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind}


# ----------------------------------------------------------------------------- manual pages

_MAN_FILE = re.compile(r"/man[1-9][^/]*/[^/]+\.[1-9][^/]*$")


def locale_to_lang(locale: str) -> str:
    """Man-page locale folder to language code: 'pt_BR' -> 'pt', 'zh_TW' -> 'zh', 'sr@latin' -> 'sr-Latn'."""
    base = re.split(r"[_.@]", locale, maxsplit=1)[0].lower()
    return f"{base}-Latn" if "@latin" in locale else base


class ManpagesReader(Source):
    kind = "manpages"

    def __init__(self, cfg: ManpagesSource):
        self.cfg = cfg
        self._files: dict[str, list[str]] | None = None
        self._packages: dict[str, str] | None = None

    # Which pages: the files that the manpages packages install, or every page under man_dir.
    def _dpkg_packages(self) -> dict[str, str]:
        """Installed manpages* packages and their versions (dpkg-query), {} without dpkg."""
        if self._packages is None:
            self._packages = {}
            if shutil.which("dpkg-query"):
                out = subprocess.run(
                    ["dpkg-query", "-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n", "manpages*"],
                    capture_output=True, text=True, check=False,
                )
                for line in out.stdout.splitlines():
                    pkg, version, status = (line.split("\t") + ["", ""])[:3]
                    if status.startswith("ii") and re.fullmatch(r"manpages(-[a-z]{2}(-[a-z]{2})?)?(-dev)?", pkg):
                        if pkg.endswith("-dev") and not self.cfg.include_dev:
                            continue
                        self._packages[pkg] = version
        return self._packages

    def _page_files(self) -> dict[str, list[str]]:
        if self._files is not None:
            return self._files
        root = Path(self.cfg.man_dir)
        if not root.is_dir():
            raise SourceError(f"manpages source: {root} does not exist; run scripts/install_manpages.sh as root")
        paths: list[str] = []
        use_dpkg = self.cfg.packages_only and shutil.which("dpkg-query") is not None
        packages = self._dpkg_packages() if use_dpkg else {}
        if packages:
            out = subprocess.run(["dpkg", "-L", *sorted(packages)], capture_output=True, text=True, check=False)
            paths = [p for p in out.stdout.splitlines() if p.startswith(str(root) + "/")]
        elif not use_dpkg:
            paths = [str(p) for p in root.rglob("*") if not p.is_dir()]
        files: dict[str, list[str]] = {}
        for p in sorted(set(paths)):
            if not _MAN_FILE.search(p) or os.path.islink(p) or not os.path.isfile(p):
                continue  # links are aliases of another page
            rel = Path(p).relative_to(root).parts
            lang = "en" if rel[0].startswith("man") else locale_to_lang(rel[0])
            files.setdefault(lang, []).append(p)
        if not files:
            raise SourceError(
                f"manpages source: no manual pages under {root}"
                + (" from the manpages* packages (none installed)" if use_dpkg else "")
                + "; run scripts/install_manpages.sh as root (Debian/Ubuntu)"
            )
        self._files = files
        return files

    def languages(self) -> list[str]:
        return sorted(self._page_files())

    def documents(self, lang: str, limit: int | None, seed: int, bad: BadRecords,
                  fraction: float = 1.0) -> Iterator[Document]:
        files = self._page_files().get(lang, [])
        take = min(max(1, round(fraction * len(files))), limit or len(files))
        if take < len(files):
            # A seeded sample of pages, not the first ones (which would all start with 'a').
            rng = np.random.default_rng([seed, stable_seed(lang)])
            files = [files[i] for i in sorted(rng.choice(len(files), size=take, replace=False))]
        for path in files:
            text = render_manpage(path, self.cfg.render_timeout_s, bad)
            if text is not None:
                yield Document(id=os.path.relpath(path, self.cfg.man_dir), lang=lang, text=text)

    def describe(self) -> dict[str, Any]:
        files = self._page_files()
        return {
            "kind": self.kind,
            "man_dir": self.cfg.man_dir,
            "packages": self._dpkg_packages() if self.cfg.packages_only else {},
            "pages_per_language": {k: len(v) for k, v in sorted(files.items())},
            "groff": _groff_version(),
        }


def _groff_version() -> str | None:
    if not shutil.which("groff"):
        return None
    out = subprocess.run(["groff", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else None


# groff: -man macros, -t tables, UTF-8 output; LL=2000n puts each paragraph on one line (no hard
# wrapping at 80 columns), HY=0 no hyphenation, AD=l no justification spaces; -P-cbou: plain
# characters without bold/underline overstrikes or SGR escapes.
_GROFF = ["groff", "-t", "-man", "-Tutf8", "-rLL=2000n", "-rHY=0", "-dAD=l", "-P-cbou"]


def render_manpage(path: str, timeout_s: float = 30.0, bad: BadRecords | None = None) -> str | None:
    """Plain text of one manual page; None for a `.so` alias or a page that renders empty."""
    if not shutil.which("groff"):
        raise SourceError("manpages source: groff not found; run scripts/install_manpages.sh (groff-base)")
    try:
        raw = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else Path(path).read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        (bad or BadRecords(policy="error")).report(f"{path}: unreadable manual page: {e}")
        return None
    head = raw.lstrip()[:200]
    if head.startswith(b".so ") and raw.count(b"\n") <= 2:
        return None  # an alias: `.so man3/other.3`, rendered under its own name
    try:
        raw.decode("utf-8")
        encoding = ["-Kutf8"]
    except UnicodeDecodeError:
        encoding = ["-k"]  # legacy encoding: let preconv guess from coding tags
    try:
        out = subprocess.run(_GROFF + encoding, input=raw, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        (bad or BadRecords(policy="error")).report(f"{path}: groff took over {timeout_s} s")
        return None
    text = tidy_rendered(out.stdout.decode("utf-8", errors="replace"))
    return text or None


def tidy_rendered(text: str) -> str:
    """Drop the running header/footer lines, indentation and runs of spaces and blank lines."""
    lines = [re.sub(r"[ \t]+", " ", ln).strip() for ln in text.splitlines()]
    nonblank = [i for i, ln in enumerate(lines) if ln]
    if len(nonblank) >= 3:  # first line: "LS(1)  User Commands  LS(1)"; last: date and name
        lines = lines[nonblank[0] + 1 : nonblank[-1]]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ----------------------------------------------------------------------------- local files

_FILE_SUFFIXES = (".jsonl", ".jsonl.gz", ".json.gz", ".txt", ".txt.gz")


class FilesReader(Source):
    kind = "files"

    def __init__(self, cfg: FilesSource):
        self.cfg = cfg

    def _files(self) -> dict[str, list[Path]]:
        root = Path(self.cfg.path)
        if not root.is_dir():
            raise SourceError(f"files source: folder {root} does not exist")
        found: dict[str, list[Path]] = {}
        for p in sorted(root.iterdir()):
            if p.is_dir():
                files = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(_FILE_SUFFIXES))
                if files:
                    found.setdefault(p.name, []).extend(files)
            elif p.name.endswith(_FILE_SUFFIXES):
                found.setdefault(p.name.split(".", 1)[0], []).append(p)
        if not found:
            raise SourceError(
                f"files source: {root} is empty: no <lang>.jsonl[.gz], <lang>.txt[.gz] or <lang>/ folders"
            )
        return found

    def languages(self) -> list[str]:
        return sorted(self._files())

    def documents(self, lang: str, limit: int | None, seed: int, bad: BadRecords,
                  fraction: float = 1.0) -> Iterator[Document]:
        docs = (doc for path in self._files().get(lang, [])
                for doc in read_records(path, lang, self.cfg.text_field, self.cfg.txt_documents, bad))
        yield from _subsample(docs, lang, limit, seed, fraction)

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "path": str(Path(self.cfg.path).resolve()),
            "files": {k: [str(p.relative_to(self.cfg.path)) for p in v] for k, v in self._files().items()},
            # (bytes, mtime in ns) per file: a file edited in place under the same name is a
            # changed input, so the ETL output built from it is not reused.
            "file_stats": {str(p.relative_to(self.cfg.path)): [p.stat().st_size, p.stat().st_mtime_ns]
                           for v in self._files().values() for p in v},
        }


MAX_LINE_BYTES = 16 << 20  # a line longer than this (16 MiB) is a bad record, skipped without being held


def _lines(path: Path, bad: BadRecords) -> Iterator[tuple[int, bytes]]:
    """(line number, bytes) of a plain or gzip file; a truncated gzip is a bad record, and so is a
    line over MAX_LINE_BYTES (read past in blocks: memory stays bounded whatever the file holds)."""
    opener = gzip.open if path.name.endswith(".gz") else open
    n = 0
    try:
        with opener(path, "rb") as f:
            while line := f.readline(MAX_LINE_BYTES + 1):
                n += 1
                if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                    size = len(line)
                    while (rest := f.readline(1 << 20)) and (size := size + len(rest)) and not rest.endswith(b"\n"):
                        pass
                    bad.report(f"{path}:{n}: line of {size:,d} bytes, over the {MAX_LINE_BYTES:,d}-byte limit: skipped")
                    continue
                yield n, line
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        bad.report(f"{path}: truncated or corrupt gzip after line {n} ({type(e).__name__}: {e}); "
                   f"the rest of the file is skipped")


def read_records(path: Path, lang: str, text_field: str, txt_documents: str, bad: BadRecords) -> Iterator[Document]:
    """Documents of one JSON-lines or text file; bad lines go to `bad` with file and line."""
    is_json = ".jsonl" in path.name or ".json." in path.name
    block: list[str] = []
    block_start = 0
    for n, raw in _lines(path, bad):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad.report(f"{path}:{n}: not valid UTF-8 (byte {e.start}: {raw[e.start:e.start + 4]!r})")
            continue
        if is_json:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                bad.report(f"{path}:{n}: malformed JSON: {e.msg} at column {e.colno}")
                continue
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                bad.report(f"{path}:{n}: no string field {text_field!r}")
                continue
            yield Document(id=f"{path.name}:{n}", lang=lang, text=text)
        elif txt_documents == "line":
            if line.strip():
                yield Document(id=f"{path.name}:{n}", lang=lang, text=line.rstrip("\n"))
        else:  # blank_line: a document is a run of non-blank lines
            if line.strip():
                block_start = block_start or n
                block.append(line.rstrip("\n"))
            elif block:
                yield Document(id=f"{path.name}:{block_start}", lang=lang, text="\n".join(block))
                block, block_start = [], 0
    if block:
        yield Document(id=f"{path.name}:{block_start}", lang=lang, text="\n".join(block))


# ----------------------------------------------------------------------------- mC4 via datasets


class MC4Reader(Source):
    """mC4 (`text`, `timestamp`, `url` records) streamed with datasets.load_dataset."""

    kind = "mc4"

    def __init__(self, cfg: MC4Source):
        self.cfg = cfg

    def languages(self) -> list[str]:
        raise SourceError("mc4 source: list the languages in source.languages (101 configurations)")

    def _files(self, lang: str) -> list[str] | None:
        if self.cfg.data_files is None:
            return None
        pattern = self.cfg.data_files.format(lang=lang)
        files = sorted(glob.glob(pattern))
        if not files:
            raise SourceError(f"mc4 source: no files match {pattern} (language {lang})")
        return files

    def documents(self, lang: str, limit: int | None, seed: int, bad: BadRecords,
                  fraction: float = 1.0) -> Iterator[Document]:
        yield from _subsample(self._records(lang, bad), lang, limit, seed, fraction)

    def _records(self, lang: str, bad: BadRecords) -> Iterator[Document]:
        files = self._files(lang)
        # Local files are streamed one by one so that an error names its file.
        for group in ([[f] for f in files] if files is not None else [None]):
            where = group[0] if group else f"{self.cfg.dataset} [{self._config(lang)}]"
            read = 0
            try:
                for record in self._stream(lang, group):
                    read += 1
                    text = record.get(self.cfg.text_field)
                    if not isinstance(text, str):
                        bad.report(f"{where}: record {read}: no string field {self.cfg.text_field!r}")
                        continue
                    yield Document(id=str(record.get("url") or f"{Path(str(where)).name}:{read}"), lang=lang, text=text)
            except SourceError:
                raise
            except Exception as e:  # noqa: BLE001 (datasets raises many kinds; name file and record)
                # datasets parses JSON in blocks: a bad line loses the rest of its block and file.
                bad.report(
                    f"{where}: unreadable after {read} records ({type(e).__name__}: {str(e)[:300]}); "
                    f"the rest of this file is skipped"
                )

    def _config(self, lang: str) -> str | None:
        return self.cfg.config.format(lang=lang) if self.cfg.config else None

    def _stream(self, lang: str, files: list[str] | None) -> Iterator[dict[str, Any]]:
        import datasets

        kwargs: dict[str, Any] = {"split": self.cfg.split, "streaming": True}
        if files is not None:
            kwargs["data_files"] = files
        if self.cfg.revision:
            kwargs["revision"] = self.cfg.revision
        ds = datasets.load_dataset(self.cfg.dataset, self._config(lang), **kwargs)
        yield from ds

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        return {
            "kind": self.kind,
            "dataset": self.cfg.dataset,
            "config": self.cfg.config,
            "split": self.cfg.split,
            "revision": self.cfg.revision,
            "data_files": self.cfg.data_files,
            "datasets_version": metadata.version("datasets"),
        }


def _subsample(docs: Iterator[Document], lang: str, limit: int | None, seed: int, fraction: float) -> Iterator[Document]:
    """Keep each document with probability `fraction` (seeded per language), stop at `limit`."""
    rng = np.random.default_rng([seed, stable_seed(lang)])
    if limit == 0:
        return
    n = 0
    for doc in docs:
        if fraction < 1.0 and rng.random() >= fraction:
            continue
        yield doc
        n += 1
        if limit is not None and n >= limit:
            return  # before reading further: closes the file or stream


def stable_seed(text: str) -> int:
    """A seed component from a string (a language code) that is the same in every process and
    run, unlike hash()."""
    return zlib.crc32(text.encode("utf-8"))
