"""Language-specific corpora: the text of the installed gettext catalogs as pretraining documents.

The mission pretrains on mC4 *and language-specific corpora*. Here the general corpus is the
translated manual pages and the language-specific one is the text of the gettext catalogs on the
machine (`<locale_dir>/<locale>/LC_MESSAGES/<domain>.mo`, ~3,900 on a stock Debian box after
scripts/install_catalogs.sh): each catalog gives one document of its language, one message per
line (the msgstr side; for English, the msgid side of every catalog of the domain). The
translation study reads the same catalogs as *parallel* text; here they are only monolingual
text, so the pretraining never sees which string translates which.

Messages are cleaned as the translation study cleans them (mt5study.translation.catalogs.clean:
mnemonics, markup, format-specifier mismatches, untranslated and identical messages out), and a
message whose English string falls in the translation study's validation or test split
(`exclude_heldout_of`, the same seeded hash) is left out in every language: no held-out source
or reference is pretraining text. Everything left out is counted per language
(`CatalogTextReader.counts`, in the ETL manifest under source.catalogs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mt5study.data.config import CatalogText
from mt5study.data.sources import BadRecords, Document, Source, SourceError


def heldout_rule(path: str | None) -> dict[str, Any] | None:
    """The split rule of a translation params file (absolute, or relative to the repository root):
    {params, seed, validation_fraction, test_fraction}; None without a file. A missing or invalid file is a SourceError naming it."""
    if path is None:
        return None
    from mt5study.config import ConfigError, load
    from mt5study.paths import find
    from mt5study.translation.config import TranslationParams

    found = find(path)  # relative to the repository root, as every params path
    if not found.is_file():
        raise SourceError(f"source.catalogs.exclude_heldout_of: {path} does not exist (a translation params file)")
    try:
        t = load(found, schema=TranslationParams).translation
    except ConfigError as e:
        raise SourceError(f"source.catalogs.exclude_heldout_of: {path} is not valid translation params:\n{e}") from None
    return {"params": str(path), "seed": t.seed, "validation_fraction": t.splits.validation_fraction,
            "test_fraction": t.splits.test_fraction}


class CatalogTextReader:
    """Documents of one language from the catalogs (see the module docstring)."""

    def __init__(self, cfg: CatalogText):
        from mt5study.translation.catalogs import locales_by_language

        self.cfg = cfg
        self.rule = heldout_rule(cfg.exclude_heldout_of)
        self.folders = locales_by_language(cfg.locale_dirs)
        self.counts: Counter = Counter()

    def _catalogs(self, lang: str) -> dict[str, Path]:
        """{domain: .mo file} of a language, each domain from its first locale folder."""
        chosen: dict[str, Path] = {}
        for folder in self.folders.get(lang, []):
            for f in sorted(folder.glob("*.mo")):
                if (self.cfg.domains is None or f.stem in self.cfg.domains) and f.stem not in chosen:
                    chosen[f.stem] = f
        return chosen

    def files(self, lang: str) -> list[Path]:
        """The catalog files a language's documents are read from (English: every language's)."""
        if lang != "en":
            return [p for _, p in sorted(self._catalogs(lang).items())]
        return [p for other in sorted(self.folders) if other != "en" and not other.startswith("zh-")
                for _, p in sorted(self._catalogs(other).items())]

    def _heldout(self, english: str) -> bool:
        if self.rule is None:
            return False
        from mt5study.translation.prepare import split_of

        r = self.rule
        return split_of(english, r["seed"], r["validation_fraction"], r["test_fraction"]) != "train"

    def _lines(self, lang: str, path: Path, domain: str, english: bool, bad: BadRecords) -> list[str]:
        """The kept lines of one catalog: msgstr (msgid for English), held-out strings left out."""
        from mt5study.translation.catalogs import CatalogError, clean, read_catalog

        try:
            messages = read_catalog(path, domain)
        except CatalogError as e:  # unreadable, truncated or wrong charset: counted, named
            self.counts["catalogs_bad"] += 1
            bad.report(f"catalogs: {e}")
            return []
        self.counts["catalogs_read"] += 1
        lines = []
        for m in messages:
            self.counts["messages"] += 1
            pair = clean(m.msgid, m.msgstr, self.cfg.markup, self.counts)  # counts why a message is out
            if pair is None:
                continue
            if self._heldout(pair[0]):
                self.counts["heldout"] += 1
                continue
            lines.append(pair[0] if english else pair[1])
        return lines

    def documents(self, lang: str, bad: BadRecords) -> Iterator[Document]:
        if lang == "en":
            # English: the msgids of every catalog of a domain, across the catalogs' languages
            # (a .mo file holds only the messages its translators translated), each line once.
            by_domain: dict[str, dict[str, None]] = {}
            for other in sorted(self.folders):
                if other == "en" or other.startswith("zh-"):
                    continue
                for domain, path in self._catalogs(other).items():
                    lines = by_domain.setdefault(domain, {})
                    for line in self._lines(other, path, domain, True, bad):
                        lines.setdefault(line, None)
            items = sorted(by_domain.items())
        else:
            items = [(d, dict.fromkeys(self._lines(lang, p, d, False, bad))) for d, p in sorted(self._catalogs(lang).items())]
        for domain, lines in items:
            if lines:
                self.counts["documents"] += 1
                self.counts["lines"] += len(lines)
                yield Document(id=f"catalogs/{lang}/{domain}", lang=lang, text="\n".join(lines))

    def describe(self) -> dict[str, Any]:
        """What reuse compares: the settings, the held-out rule and the catalog files per language."""
        return {"locale_dirs": self.cfg.locale_dirs, "domains": self.cfg.domains, "markup": self.cfg.markup,
                "exclude_heldout_of": self.rule,
                "catalogs_per_language": {k: len(self._catalogs(k)) for k in sorted(self.folders)}}


class WithCatalogs(Source):
    """A main source (manual pages, mC4, files) whose languages also get the catalogs' text."""

    def __init__(self, main: Source, cfg: CatalogText):
        self.main = main
        self.catalogs = CatalogTextReader(cfg)
        self.kind = main.kind

    def languages(self) -> list[str]:
        return self.main.languages()  # catalogs add text to these languages, not languages

    def documents(self, lang: str, limit: int | None, seed: int, bad: BadRecords,
                  fraction: float = 1.0) -> Iterator[Document]:
        """The main source's sample (fraction, limit apply to it), then every catalog document."""
        yield from self.main.documents(lang, limit, seed, bad, fraction)
        yield from self.catalogs.documents(lang, bad)

    def describe(self) -> dict[str, Any]:
        return {**self.main.describe(), "catalogs": self.catalogs.describe()}

    def __getattr__(self, name: str) -> Any:  # the main source's own helpers (_files, _page_files)
        return getattr(self.main, name)
