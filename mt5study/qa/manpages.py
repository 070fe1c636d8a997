"""The embedded QA set: extractive questions built from section-1 manual pages, offline.

Every option that a page documents as a tagged paragraph (`-v, --verbose` then its description)
becomes one question, templated in the page's language ("What does the option -v of ls do?",
"Was bewirkt die Option -v von ls?", ...); the answer is the first paragraph of the option's
description (cut to its first sentence when longer than `max_answer_chars`), and the context
is the run of consecutive option entries around it, at most `context_chars` characters: a
window of the OPTIONS (or DESCRIPTION) section, as SQuAD's paragraphs are windows of an article.

Pages are rendered with groff keeping the layout: a tag sits at the list's indent and its
description one level deeper (or, for a short tag, on the same line after a gap of spaces), which
is what tells an option entry from running text. `mt5study.data.sources.render_manpage` flattens
the indentation (right for pretraining text), so the rendering here is its own groff call.

Train and validation are split by command, the same commands in every language (a seeded hash of
the command name), so no context, and no option of a held-out command, is seen in training.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mt5study.data.sources import locale_to_lang
from mt5study.qa.config import QUESTION_TEMPLATES, WHICH_OPTION_TEMPLATES, QASource

# groff: -man macros, -t tables, UTF-8; LL=2000n one line per paragraph, HY=0 no hyphenation,
# AD=l no justification spaces; -P-cbou: no bold/underline overstrikes or SGR escapes.
GROFF = ["groff", "-t", "-man", "-Tutf8", "-rLL=2000n", "-rHY=0", "-dAD=l", "-P-cbou"]

_PAGE = re.compile(r"^(?P<cmd>[A-Za-z0-9][\w.+-]*?)\.1[a-z]*(?:\.gz)?$")
# One option form: -v, --verbose, +N, -o FILE, --color[=WHEN], --block-size=SIZE, -#, -?
_FORM = r"[-+]{1,2}[A-Za-z0-9?#@][\w.:?#@+-]*(?:\[?[= ]?[A-Za-zÀ-ÿ<\[{][^\s,]*\]?)?"
_TAG = re.compile(rf"^{_FORM}(?:,? +{_FORM})*$")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s|(?<=[。！？；])")


@dataclass
class OptionEntry:
    """One documented option: its tag as printed and its description paragraphs."""

    tag: str
    paragraphs: list[str]

    @property
    def option(self) -> str:
        """The first option form without its argument: "-w, --width=COLS" -> "-w"."""
        first = re.split(r",\s*", self.tag)[0]
        return re.split(r"[=\[ ]", first, maxsplit=1)[0]


@dataclass
class Page:
    lang: str
    command: str
    path: str
    entries: list[list[OptionEntry]] = field(default_factory=list)  # one list per section
    error: str | None = None


# ----------------------------------------------------------------------------- rendering, parsing

def render_layout(path: str, timeout_s: float = 30.0) -> str | None:
    """groff's plain-text rendering of a page with its indentation; None for a `.so` alias."""
    if not shutil.which("groff"):
        raise RuntimeError("groff not found: run scripts/install_manpages.sh (groff-base)")
    raw = gzip.decompress(Path(path).read_bytes()) if path.endswith(".gz") else Path(path).read_bytes()
    if raw.lstrip().startswith(b".so ") and raw.count(b"\n") <= 2:
        return None  # an alias of another page
    try:
        raw.decode("utf-8")
        encoding = "-Kutf8"
    except UnicodeDecodeError:
        encoding = "-k"  # legacy encoding: preconv guesses from coding tags
    out = subprocess.run([*GROFF, encoding], input=raw, capture_output=True, timeout=timeout_s, check=False)
    return out.stdout.decode("utf-8", errors="replace")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def parse_options(rendered: str) -> list[list[OptionEntry]]:
    """Option entries of a rendered page, grouped by section (sections without any are left out)."""
    lines = rendered.replace("\t", " " * 8).splitlines()
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    if len(nonblank) < 3:
        return []
    lines = lines[nonblank[0] + 1: nonblank[-1]]  # drop the running header and footer
    sections: list[list[OptionEntry]] = []
    current: list[OptionEntry] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
            continue
        ind = _indent(line)
        if ind == 0:  # a section heading
            if current:
                sections.append(current)
            current = []
            i += 1
            continue
        entry, i = _entry_at(lines, i, ind)
        if entry is not None:
            current.append(entry)
    if current:
        sections.append(current)
    return sections


def _entry_at(lines: list[str], i: int, ind: int) -> tuple[OptionEntry | None, int]:
    """The option entry starting at line i (tag at indent `ind`), and the next line to read."""
    text = lines[i].strip()
    same_line = re.match(r"^(\S.*?)( {2,})(\S.*)$", text)
    if same_line and _TAG.match(same_line.group(1)) and not _TAG.match(text):
        tag, first = same_line.group(1), [same_line.group(3)]
        j = i + 1
    elif _TAG.match(text):
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        if j >= len(lines) or _indent(lines[j]) <= ind:
            return None, i + 1  # a tag-like line of running text, not an entry
        tag, first = text, []
    else:
        return None, i + 1
    paragraphs: list[list[str]] = [first] if first else []
    blank = False
    while j < len(lines):
        ln = lines[j]
        if not ln.strip():
            blank = True
            j += 1
            continue
        if _indent(ln) <= ind:  # the next entry, or running text of the section
            break
        if blank or not paragraphs:
            paragraphs.append([])
        paragraphs[-1].append(ln.strip())
        blank = False
        j += 1
    paras = [p for p in (_clean(" ".join(p)) for p in paragraphs) if p]
    return (OptionEntry(tag=_clean(tag), paragraphs=paras) if paras else None), j


def answer_span(description: str, max_chars: int) -> tuple[str | None, str]:
    """The answer taken from a description's first paragraph, and how it was taken."""
    if len(description) <= max_chars:
        return description, "paragraph"
    m = _SENTENCE_END.search(description)
    if m and 0 < m.start() <= max_chars:
        return description[: m.start()].rstrip(), "first_sentence"
    return None, "too_long"


# ----------------------------------------------------------------------------- building the set

def list_pages(man_dir: str, languages: list[str] | None) -> dict[str, dict[str, str]]:
    """{lang: {command: path}} of section-1 pages; one page per command and language."""
    root = Path(man_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no manual pages; run scripts/install_manpages.sh as root")
    dirs = [("en", root / "man1")] + [
        (locale_to_lang(d.name), d / "man1") for d in sorted(root.iterdir())
        if d.is_dir() and not d.name.startswith("man")
    ]
    pages: dict[str, dict[str, str]] = {}
    for lang, folder in dirs:
        if lang not in QUESTION_TEMPLATES or (languages and lang not in languages) or not folder.is_dir():
            continue
        for p in sorted(folder.iterdir()):
            m = _PAGE.match(p.name)
            if m and p.is_file() and not p.is_symlink():
                pages.setdefault(lang, {}).setdefault(m.group("cmd"), str(p))  # zh_CN before zh_TW
    if "en" in pages and len(pages) > 1:
        # English man1 holds every installed package's pages: keep the commands that some other
        # language translates, so that English asks about the same commands as the rest.
        others = set().union(*(set(v) for k, v in pages.items() if k != "en"))
        pages["en"] = {c: p for c, p in pages["en"].items() if c in others}
    return pages


def _stable(seed: int, salt: str, text: str) -> int:
    return zlib.crc32(f"{seed}:{salt}:{text}".encode())


def split_of(command: str, seed: int, validation_fraction: float) -> str:
    """train or validation, from a seeded hash of the command: the same in every language."""
    return "validation" if _stable(seed, "split", command) % 10_000 < validation_fraction * 10_000 else "train"


def _load_page(args: tuple[str, str, str, float]) -> Page:
    lang, command, path, timeout_s = args
    page = Page(lang=lang, command=command, path=path)
    try:
        rendered = render_layout(path, timeout_s)
    except (OSError, EOFError, zlib.error, subprocess.TimeoutExpired) as e:
        page.error = f"{path}: {type(e).__name__}: {e}"
        return page
    page.entries = parse_options(rendered) if rendered else []
    return page


def _pages_in_order(jobs: list[tuple[str, str, str, float]], workers: int) -> Iterator[Page]:
    """Pages rendered `workers` at a time (threads: the work is in groff's processes), in order;
    chunked so that a caller who stops early has not rendered every page."""
    if workers <= 1:
        yield from map(_load_page, jobs)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(workers) as pool:
        for k in range(0, len(jobs), 4 * workers):
            yield from pool.map(_load_page, jobs[k: k + 4 * workers])


def page_examples(page: Page, cfg: Any, seed: int, counts: Counter) -> list[dict[str, Any]]:
    """The questions of one page: contexts are runs of entries; the answer is a description span
    (task describe_option) or an option's tag (which_option)."""
    which = cfg.task == "which_option"
    template = (WHICH_OPTION_TEMPLATES if which else QUESTION_TEMPLATES)[page.lang]
    chosen: list[tuple[int, int, str]] = []  # (section, entry, description span)
    seen: set[str] = set()
    spans = [[answer_span(e.paragraphs[0], cfg.max_answer_chars) for e in entries] for entries in page.entries]
    # which_option: a description that two options of the page share asks about neither
    shared = Counter(a for section in spans for a, _ in section if a is not None)
    for s, entries in enumerate(page.entries):
        for e, entry in enumerate(entries):
            counts["options_found"] += 1
            if entry.option in seen:
                counts["duplicate_option"] += 1
                continue
            seen.add(entry.option)
            answer, how = spans[s][e]
            if answer is None:
                counts["answer_too_long"] += 1
                continue
            if len(answer) < cfg.min_answer_chars:
                counts["answer_too_short"] += 1
                continue
            if which and shared[answer] > 1:
                counts["description_shared"] += 1
                continue
            counts[f"answer_{how}"] += 1
            chosen.append((s, e, answer))
    if cfg.max_questions_per_command and len(chosen) > cfg.max_questions_per_command:
        rng = np.random.default_rng([seed, _stable(seed, "questions", f"{page.lang}/{page.command}")])
        keep = sorted(rng.choice(len(chosen), size=cfg.max_questions_per_command, replace=False))
        counts["questions_not_sampled"] += len(chosen) - len(keep)
        chosen = [chosen[k] for k in keep]
    examples = []
    for s, e, description in chosen:
        entry = page.entries[s][e]
        context, offset = _context(page.entries[s], e, cfg.context_chars)
        if which:
            question = template.format(desc=description, cmd=page.command)
            answer, start = entry.tag, offset
        else:
            question = template.format(opt=entry.option, cmd=page.command)
            answer, start = description, offset + len(entry.tag) + 1
        assert context[start: start + len(answer)] == answer  # built so: a failure is a bug here
        examples.append({
            "id": f"manpages/{page.lang}/{page.command}/{entry.option}",
            "lang": page.lang,
            "title": page.command,
            "question": question,
            "context": context,
            "answers": {"text": [answer], "answer_start": [start]},
        })
    return examples


def _entry_text(entry: OptionEntry) -> str:
    return entry.tag + "\n" + "\n".join(entry.paragraphs)


def _context(entries: list[OptionEntry], k: int, max_chars: int) -> tuple[str, int]:
    """Entries around entry k, chunked from the section's start at whole entries (so neighbouring
    questions share a context, as SQuAD's share a paragraph); entry k's character offset."""
    sizes = [len(_entry_text(e)) + 1 for e in entries]
    first = 0
    while True:  # chunks [first, last): greedily fill up to max_chars, at least one entry
        last, used = first, 0
        while last < len(entries) and (last == first or used + sizes[last] <= max_chars):
            used += sizes[last]
            last += 1
        if first <= k < last:
            break
        first = last
    texts = [_entry_text(e) for e in entries[first:last]]
    context = "\n".join(texts)
    return context, sum(len(t) + 1 for t in texts[: k - first])


def _quotas(max_commands: int | None, validation_fraction: float) -> dict[str, int | None]:
    """Commands per split and language: at least one held out when a limit is set."""
    if max_commands is None:
        return {"train": None, "validation": None}
    held_out = min(max_commands - 1, max(1, round(max_commands * validation_fraction)))
    return {"train": max_commands - held_out, "validation": held_out}


def build(source: QASource, seed: int) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """The embedded set: {"train": [...], "validation": [...]} and a report of what was counted."""
    cfg = source.manpages
    pages = list_pages(cfg.man_dir, source.languages)
    if not pages:
        raise FileNotFoundError(
            f"no section-1 manual pages under {cfg.man_dir} for languages {source.languages}; "
            "run scripts/install_manpages.sh as root")
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    report: dict[str, Any] = {"languages": {}, "groff": _groff_version()}
    for lang in sorted(pages):
        counts: Counter = Counter(pages_listed=len(pages[lang]))
        order = sorted(pages[lang], key=lambda c: (_stable(seed, "select", c), c))
        commands: dict[str, list[str]] = {"train": [], "validation": []}
        for split, quota in _quotas(cfg.max_commands_per_language, source.validation_fraction).items():
            jobs = [(lang, c, pages[lang][c], cfg.render_timeout_s) for c in order
                    if split_of(c, seed, source.validation_fraction) == split]
            if quota == 0:
                continue
            for page in _pages_in_order(jobs, cfg.workers):
                counts["pages_read"] += 1
                if page.error:
                    counts["pages_unreadable"] += 1
                    report.setdefault("errors", []).append(page.error)
                    continue
                examples = page_examples(page, cfg, seed, counts)
                if not examples:
                    counts["pages_without_options"] += 1
                    continue
                splits[split].extend(examples)
                commands[split].append(page.command)
                counts[f"questions_{split}"] += len(examples)
                counts[f"contexts_{split}"] += len({ex["context"] for ex in examples})
                if quota is not None and len(commands[split]) >= quota:
                    break
        report["languages"][lang] = {**dict(sorted(counts.items())),
                                     "commands": {k: sorted(v) for k, v in commands.items()}}
    return splits, report


def _groff_version() -> str | None:
    if not shutil.which("groff"):
        return None
    out = subprocess.run(["groff", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.splitlines()[0] if out.stdout else None


def available() -> bool:
    """groff and at least one section-1 page: what the builder needs."""
    return shutil.which("groff") is not None and os.path.isdir("/usr/share/man/man1")
