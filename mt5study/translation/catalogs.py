"""Parallel strings from the installed gettext catalogs: English msgid -> translated msgstr.

A compiled catalog `<locale_dir>/<locale>/LC_MESSAGES/<domain>.mo` is read with Babel
(`babel.messages.mofile.read_mo`). Every message is counted by what it holds, and cleaned so that
both sides carry the same text a reader would see:

- header (msgid ""): skipped; plural entries give two pairs (singular -> msgstr[0], plural ->
  msgstr[1], or msgstr[0] where the language has one form); message contexts are kept in the key
  (so "Open" as a verb and as an adjective stay two messages);
- mnemonics: `_File` -> `File` on both sides, and the CJK form `ファイル(_F)` -> `ファイル`;
- markup: Pango/XML tags and entities stripped (or the message dropped, or kept: `markup`);
- format specifiers (%s, %1$d, %(name)s, {0}): kept, and a message whose target has other
  specifiers than its source is dropped (a translation that would crash the program is no reference);
- untranslated (empty msgstr) and identical (msgstr == msgid, e.g. "%H:%M") messages are dropped.

Bad catalogs are counted per language and named in the report, never skipped silently: unreadable
or malformed files (CatalogError), and wrong charsets (CatalogCharsetError): bytes that do not
decode in the declared charset, an unknown charset, or UTF-8 bytes declared as a legacy charset.
"""

from __future__ import annotations

import html
import re
import struct
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mt5study.data.sources import locale_to_lang
from mt5study.translation.config import CatalogSource

_PRINTF = (r"%(?:\d+\$)?[-+ #0']*(?:\*|\d+)?(?:\.(?:\*|\d+))?(?:hh|ll|[hlLqjzZt]|I64|I32|I)?"
           r"(?P<conv>[diouxXeEfFgGaAcCsSpnm])")
_SPECIFIER = re.compile(rf"(?P<percent>%%)|{_PRINTF}|%\((?P<name>\w+)\)[sdrifx]|\{{(?P<field>[\w.]*)(?:![rsa])?(?::[^{{}}]*)?\}}")
_TAG = re.compile(r"</?[A-Za-z][\w:.-]*(?:\s+[^<>]*?)?/?>")
_ENTITY = re.compile(r"&(?:[A-Za-z]+|#\d+|#x[0-9A-Fa-f]+);")
_CJK_MNEMONIC = re.compile(r"\s*[(（]_[A-Za-z0-9][)）]")
_MNEMONIC = re.compile(r"_(?=[^\W_])")
_LETTER = re.compile(r"[^\W\d_]")


class CatalogError(ValueError):
    """A catalog file that cannot be read: missing, truncated, not a .mo file."""


class CatalogCharsetError(CatalogError):
    """A catalog whose text does not decode in its declared charset (or declares an unknown one)."""


@dataclass
class Message:
    domain: str
    context: str | None
    msgid: str
    msgstr: str
    form: str  # "singular" or "plural"


# ----------------------------------------------------------------------------- reading

def read_catalog(path: str | Path, domain: str | None = None) -> list[Message]:
    """Every (msgid, msgstr) of a .mo file, plurals split in two; raises CatalogError."""
    from babel.messages.mofile import read_mo

    path = Path(path)
    domain = domain or path.stem
    try:
        with open(path, "rb") as f:
            catalog = read_mo(f)
    except UnicodeDecodeError as e:
        raise CatalogCharsetError(f"{path}: text is not valid in its declared charset: {e}") from e
    except LookupError as e:
        raise CatalogCharsetError(f"{path}: unknown charset: {e}") from e
    except (OSError, struct.error, EOFError, IndexError, ValueError) as e:
        raise CatalogError(f"{path}: not a readable gettext catalog: {type(e).__name__}: {e}") from e
    charset = (catalog.charset or "utf-8").lower().replace("_", "-")
    out = []
    for m in catalog:
        if not m.id:
            continue  # the header
        context = m.context.decode(charset) if isinstance(m.context, bytes) else m.context
        if isinstance(m.id, (list, tuple)):
            forms = list(m.string) if isinstance(m.string, (list, tuple)) else [m.string]
            out.append(Message(domain, context, m.id[0], forms[0] if forms else "", "singular"))
            plural = forms[1] if len(forms) > 1 else (forms[0] if forms else "")
            out.append(Message(domain, context, m.id[1], plural, "plural"))
        else:
            out.append(Message(domain, context, m.id, m.string or "", "singular"))
    if charset not in ("utf-8", "utf8", "ascii", "us-ascii"):
        _check_legacy_charset(path, charset, out)
    return out


def _check_legacy_charset(path: Path, charset: str, messages: list[Message]) -> None:
    """UTF-8 bytes declared as latin-1 (or another 8-bit charset) decode without error into
    mojibake ('Ã¤' for 'ä'): refuse a catalog whose non-ASCII text is valid UTF-8 once re-encoded."""
    for m in messages:
        text = m.msgstr
        if text.isascii():
            continue
        try:
            again = text.encode(charset).decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            continue
        if again != text:
            raise CatalogCharsetError(f"{path}: declares charset {charset} but holds UTF-8 text "
                                      f"({text[:40]!r} reads as {again[:40]!r})")


# ----------------------------------------------------------------------------- cleaning

def specifiers(text: str) -> list[str]:
    """The format specifiers of a string, order-free: %s, %1$d -> 'd', %(n)s -> 'n', {0} -> '{0}'."""
    out = []
    for m in _SPECIFIER.finditer(text):
        if m.group("percent"):
            continue  # a literal percent sign
        if m.group("conv"):
            out.append(m.group("conv"))
        elif m.group("name") is not None:
            out.append(f"%({m.group('name')})")
        else:
            out.append("{" + m.group("field") + "}")
    return sorted(out)


def strip_mnemonic(text: str) -> tuple[str, bool]:
    """`_File` -> `File`, `ファイル(_F)` -> `ファイル`; only one marker, and not in an IDENTIFIER_LIKE_THIS."""
    cjk = _CJK_MNEMONIC.search(text)
    if cjk:
        return text[: cjk.start()] + text[cjk.end():], True
    if text.count("_") != 1 or not _MNEMONIC.search(text):
        return text, False
    word = next(w for w in text.split() if "_" in w)
    if word.upper() == word and any(c.isalpha() for c in word):
        return text, False  # GTK_DEBUG, an environment variable
    return _MNEMONIC.sub("", text, count=1), True


def has_markup(text: str) -> bool:
    return bool(_TAG.search(text) or _ENTITY.search(text))


def strip_markup(text: str) -> str:
    return html.unescape(_TAG.sub("", text))


def _whitespace(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def clean(msgid: str, msgstr: str, markup: str, counts: Counter) -> tuple[str, str] | None:
    """Both sides cleaned, or None (the reason counted)."""
    if not msgstr.strip():
        counts["untranslated"] += 1
        return None
    if "\n" in msgid or "\t" in msgid:
        counts["multiline"] += 1
    src, had = strip_mnemonic(msgid)
    tgt, _ = strip_mnemonic(msgstr)
    counts["mnemonic"] += had
    if has_markup(src) or has_markup(tgt):
        counts["markup"] += 1
        if markup == "drop":
            counts["dropped_markup"] += 1
            return None
        if markup == "strip":
            src, tgt = strip_markup(src), strip_markup(tgt)
    src, tgt = _whitespace(src), _whitespace(tgt)
    spec = specifiers(src)
    if spec or specifiers(tgt):
        counts["format_specifiers"] += 1
        if spec != specifiers(tgt):
            counts["format_mismatch"] += 1
            return None
    if src == tgt:
        counts["identical"] += 1
        return None
    return src, tgt


# ----------------------------------------------------------------------------- per language

_TRADITIONAL = ("zh_TW", "zh_HK", "zh_MO", "zh_Hant")


def locales_by_language(locale_dirs: list[str]) -> dict[str, list[Path]]:
    """{lang: [LC_MESSAGES folders]}: the bare locale first (de, then de_AT ...); zh is read from
    Simplified locales only (zh_CN, zh_SG, zh_Hans); variants with a modifier (sr@latin) are left out."""
    found: dict[str, list[Path]] = {}
    for root in map(Path, locale_dirs):
        if not root.is_dir():
            continue
        for d in sorted(root.iterdir(), key=lambda p: ("_" in p.name, p.name)):
            if "@" in d.name or not (d / "LC_MESSAGES").is_dir():
                continue
            lang = locale_to_lang(d.name)
            if lang == "zh" and d.name.split(".")[0] in _TRADITIONAL:
                lang = "zh-Hant"  # not a language pairs can name: zh is Simplified Chinese
            found.setdefault(lang, []).append(d / "LC_MESSAGES")
    return found


def language_table(cfg: CatalogSource, lang: str, folders: list[Path], counts: Counter,
                   errors: list[str]) -> dict[tuple[str, str, str, str], tuple[str, str]]:
    """{(domain, context, msgid, form): (clean English, clean translation)} of one language;
    each domain read from the first locale folder that has it."""
    chosen: dict[str, Path] = {}
    for folder in folders:
        for f in sorted(folder.glob("*.mo")):
            if (cfg.domains is None or f.stem in cfg.domains) and f.stem not in chosen:
                chosen[f.stem] = f
    counts["catalogs_found"] += len(chosen)
    if cfg.domains is not None:
        counts["domains_missing"] += len(set(cfg.domains) - set(chosen))  # a misspelled or uninstalled catalog
    table: dict[tuple[str, str, str, str], tuple[str, str]] = {}
    for domain in sorted(chosen):
        try:
            messages = read_catalog(chosen[domain], domain)
        except CatalogCharsetError as e:
            counts["catalogs_bad_charset"] += 1
            errors.append(str(e))
            continue
        except CatalogError as e:
            counts["catalogs_unreadable"] += 1
            errors.append(str(e))
            continue
        counts["catalogs_read"] += 1
        for m in messages:
            if cfg.max_messages_per_language and counts["messages"] >= cfg.max_messages_per_language:
                counts["messages_over_limit"] += 1
                continue
            counts["messages"] += 1
            counts["plural"] += m.form == "plural"
            counts["with_context"] += m.context is not None
            pair = clean(m.msgid, m.msgstr, cfg.markup, counts)
            if pair is not None:
                counts["kept"] += 1
                table[(m.domain, m.context or "", m.msgid, m.form)] = pair
    return table


def load(cfg: CatalogSource, pairs: list[tuple[str, str]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Records {src_lang, tgt_lang, source, target, key, origin} for every pair, and the report.

    A pair between two non-English languages is joined on the English message (pivot): both
    translate the same msgid of the same domain and context.
    """
    folders = locales_by_language(cfg.locale_dirs)
    langs = sorted({l for p in pairs for l in p} - {"en"})
    report: dict[str, Any] = {"kind": "catalogs", "locale_dirs": cfg.locale_dirs, "languages": {}, "errors": []}
    tables = {}
    for lang in langs:
        counts: Counter = Counter()
        tables[lang] = language_table(cfg, lang, folders.get(lang, []), counts, report["errors"])
        report["languages"][lang] = {"locales": [f.parent.name for f in folders.get(lang, [])], **dict(sorted(counts.items()))}
    records = []
    for src, tgt in pairs:
        if "en" in (src, tgt):
            other = tgt if src == "en" else src
            for key, (en, xx) in tables[other].items():
                s, t = (en, xx) if src == "en" else (xx, en)
                records.append(_record(src, tgt, s, t, en, key))
        else:
            for key in sorted(tables[src].keys() & tables[tgt].keys()):
                en, s = tables[src][key]
                records.append(_record(src, tgt, s, tables[tgt][key][1], en, key))
    return records, report


def _record(src: str, tgt: str, source: str, target: str, english: str, key: tuple) -> dict[str, Any]:
    domain, context, _, form = key
    return {"src_lang": src, "tgt_lang": tgt, "source": source, "target": target, "key": english,
            "origin": f"catalogs/{domain}" + (f"/{context}" if context else "") + ("/plural" if form == "plural" else "")}


def has_letters(text: str) -> bool:
    """A letter outside the format specifiers (so '%s: %s' and '%H:%M' have none)."""
    return bool(_LETTER.search(_SPECIFIER.sub("", text)))
