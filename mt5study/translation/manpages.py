"""Parallel text from translated manual pages: one option's description in two languages.

A command's section-1 page in English (man1/) and in another language (<locale>/man1/) document
the same options: each page is rendered and parsed into option entries exactly as the QA set
does (mt5study.qa.manpages: groff with the layout kept, tag at the list's indent), and the two
pages' entries are aligned by option flag (`-v`, `--verbose`). The pair is the first paragraph of
each description. Flags documented in one language only, and flags documented twice in one page,
are counted, not paired; a translated page may lag its English one, which the length-ratio filter
in prepare catches.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from mt5study.qa.manpages import _pages_in_order, list_pages
from mt5study.translation.config import ManpageSource


def page_options(page: Any) -> tuple[dict[str, str], int]:
    """{flag: first description paragraph} of a parsed page, and how many flags repeat."""
    options: dict[str, str] = {}
    repeated = set()
    for section in page.entries:
        for entry in section:
            if entry.option in options:
                repeated.add(entry.option)
            else:
                options[entry.option] = entry.paragraphs[0]
    for flag in repeated:  # documented twice (e.g. in SYNOPSIS-like lists): ambiguous
        options.pop(flag)
    return options, len(repeated)


def align(english: dict[str, str], other: dict[str, str], counts: Counter) -> list[tuple[str, str, str]]:
    """(flag, English, translation) for the flags both pages document, in English page order."""
    both = [f for f in english if f in other]
    counts["flags_aligned"] += len(both)
    counts["flags_only_english"] += len(english) - len(both)
    counts["flags_only_translation"] += len(other) - len(both)
    return [(f, english[f], other[f]) for f in both]


def load(cfg: ManpageSource, pairs: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records for every pair (English pivot for pairs without English), and the report."""
    langs = sorted({l for p in pairs for l in p} - {"en"})
    pages = list_pages(cfg.man_dir, ["en", *langs])
    report: dict[str, Any] = {"kind": "manpages", "man_dir": cfg.man_dir, "languages": {}, "errors": []}
    english_cache: dict[str, dict[str, str]] = {}
    aligned: dict[str, dict[tuple[str, str], tuple[str, str]]] = {}  # lang -> (cmd, flag) -> (en, xx)
    for lang in langs:
        counts: Counter = Counter()
        commands = sorted(set(pages.get(lang, {})) & set(pages.get("en", {})))
        counts["commands_without_english_page"] = len(set(pages.get(lang, {})) - set(commands))
        if cfg.max_commands_per_language:
            commands = commands[: cfg.max_commands_per_language]
        jobs = [(lang, c, pages[lang][c], cfg.render_timeout_s) for c in commands]
        en_jobs = [("en", c, pages["en"][c], cfg.render_timeout_s) for c in commands if c not in english_cache]
        for page in _pages_in_order(en_jobs, cfg.workers):
            english_cache[page.command] = page_options(page)[0] if not page.error else {}
            if page.error:
                report["errors"].append(page.error)
        aligned[lang] = {}
        for page in _pages_in_order(jobs, cfg.workers):
            counts["pages_read"] += 1
            if page.error:
                counts["pages_unreadable"] += 1
                report["errors"].append(page.error)
                continue
            options, repeated = page_options(page)
            counts["flags_repeated"] += repeated
            for flag, en, xx in align(english_cache.get(page.command, {}), options, counts):
                aligned[lang][(page.command, flag)] = (en, xx)
        report["languages"][lang] = dict(sorted(counts.items()))
    records = []
    for src, tgt in pairs:
        if "en" in (src, tgt):
            other = tgt if src == "en" else src
            items = [(k, en, xx) for k, (en, xx) in aligned[other].items()]
            for (cmd, flag), en, xx in items:
                s, t = (en, xx) if src == "en" else (xx, en)
                records.append(_record(src, tgt, s, t, en, cmd, flag))
        else:
            for key in sorted(aligned[src].keys() & aligned[tgt].keys()):
                en, s = aligned[src][key]
                records.append(_record(src, tgt, s, aligned[tgt][key][1], en, *key))
    return records, report


def _record(src: str, tgt: str, source: str, target: str, english: str, cmd: str, flag: str) -> dict[str, Any]:
    return {"src_lang": src, "tgt_lang": tgt, "source": source, "target": target, "key": english,
            "origin": f"manpages/{cmd}/{flag}"}
