"""gettext catalogs as parallel text: every kind of message handled and counted, bad catalogs named.

The .mo files are written byte by byte here (GNU's format: magic, count, two offset tables), so
that broken ones (truncated, wrong charset) can be made as well as good ones.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import pytest

from mt5study.translation import catalogs
from mt5study.translation.config import CatalogSource


def write_mo(path: Path, messages: list[tuple[bytes, bytes]], charset: str = "UTF-8") -> Path:
    """A GNU .mo file: msgid -> msgstr (b"ctx\\x04id" for contexts, b"one\\0many" for plurals)."""
    header = (f"Content-Type: text/plain; charset={charset}\nPlural-Forms: nplurals=2; plural=(n != 1);\n").encode()
    entries = sorted([(b"", header), *messages])
    n = len(entries)
    ids_at, strs_at = 28, 28 + 8 * n
    data_at = strs_at + 8 * n
    blob, id_table, str_table = b"", [], []
    for column, table in ((0, id_table), (1, str_table)):
        for e in entries:
            table.append((len(e[column]), data_at + len(blob)))
            blob += e[column] + b"\0"
    out = struct.pack("<7I", 0x950412DE, 0, n, ids_at, strs_at, 0, 0)
    out += b"".join(struct.pack("<2I", *t) for t in id_table) + b"".join(struct.pack("<2I", *t) for t in str_table)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(out + blob)
    return path


GOOD = [
    (b"Open", b"\xc3\x96ffnen"),
    (b"Action\x04Open", b"\xc3\x96ffne"),                         # a message context
    (b"_File", b"_Datei"),                                        # a mnemonic
    (b"%d file\x00%d files", b"%d Datei\x00%d Dateien"),          # a plural
    (b"<b>Bold</b> text", b"<b>Fetter</b> Text"),                 # markup
    (b"Copy %s to {0}", b"%s nach {0} kopieren"),                 # format specifiers, kept
    (b"Missing %s", b"Fehlt"),                                    # specifier lost: dropped
    (b"%H:%M", b"%H:%M"),                                         # identical: dropped
    (b"Close", b""),                                              # untranslated: dropped
    (b"Line one\nline two", b"Zeile eins\nZeile zwei"),           # multi-line
]


@pytest.fixture
def locale_dir(tmp_path) -> Path:
    write_mo(tmp_path / "de" / "LC_MESSAGES" / "app.mo", GOOD)
    write_mo(tmp_path / "ja" / "LC_MESSAGES" / "app.mo", [(b"_File", "ファイル(_F)".encode()), (b"Open", "開く".encode()),
                                                         (b"Action\x04Open", "開く".encode())])
    return tmp_path


def test_read_catalog_splits_plurals_and_keeps_contexts(locale_dir):
    msgs = catalogs.read_catalog(locale_dir / "de" / "LC_MESSAGES" / "app.mo")
    by = {(m.context, m.msgid): m for m in msgs}
    assert by[(None, "%d file")].msgstr == "%d Datei" and by[(None, "%d file")].form == "singular"
    assert by[(None, "%d files")].msgstr == "%d Dateien" and by[(None, "%d files")].form == "plural"
    assert by[("Action", "Open")].msgstr == "Öffne" and by[(None, "Open")].msgstr == "Öffnen"
    assert all(m.msgid for m in msgs)  # the header is not a message


def test_language_table_counts_every_kind(locale_dir):
    counts, errors = Counter(), []
    folders = catalogs.locales_by_language([str(locale_dir)])["de"]
    table = catalogs.language_table(CatalogSource(locale_dirs=[str(locale_dir)]), "de", folders, counts, errors)
    got = {v for v in table.values()}
    assert ("File", "Datei") in got                       # mnemonic stripped on both sides
    assert ("Bold text", "Fetter Text") in got            # markup stripped
    assert ("Copy %s to {0}", "%s nach {0} kopieren") in got
    assert ("%d files", "%d Dateien") in got and ("%d file", "%d Datei") in got
    assert ("Line one line two", "Zeile eins Zeile zwei") in got
    assert {("Open", "Öffnen"), ("Open", "Öffne")} <= got  # two contexts, two messages
    assert counts["messages"] == 11 and counts["kept"] == 8 and errors == []
    for key, n in {"untranslated": 1, "identical": 1, "format_mismatch": 1, "mnemonic": 1, "markup": 1,
                   "plural": 1, "with_context": 1, "multiline": 1, "catalogs_read": 1}.items():
        assert counts[key] == n, key


def test_markup_drop_and_keep(locale_dir):
    folders = catalogs.locales_by_language([str(locale_dir)])["de"]
    for mode, expect in (("drop", None), ("keep", ("<b>Bold</b> text", "<b>Fetter</b> Text"))):
        counts: Counter = Counter()
        table = catalogs.language_table(CatalogSource(locale_dirs=[str(locale_dir)], markup=mode), "de", folders, counts, [])
        bold = [v for v in table.values() if "Bold" in v[0]]
        assert bold == ([] if expect is None else [expect])
        assert counts["dropped_markup"] == (mode == "drop")


def test_cleaning_rules():
    assert catalogs.strip_mnemonic("Be_fore:") == ("Before:", True)
    assert catalogs.strip_mnemonic("ファイル(_F)") == ("ファイル", True)
    assert catalogs.strip_mnemonic("GTK_DEBUG is set") == ("GTK_DEBUG is set", False)
    assert catalogs.strip_mnemonic("a_b_c") == ("a_b_c", False)
    assert catalogs.specifiers("%1$s of %2$d, %(name)s and {0}") == ["%(name)", "d", "s", "{0}"]
    assert catalogs.specifiers("100%% done") == []
    assert catalogs.has_letters("%s: %d") is False and catalogs.has_letters("%s files") is True
    assert catalogs.strip_markup("a &amp; <span weight='bold'>b</span>") == "a & b"


def test_pairs_through_english_and_reverse(locale_dir):
    cfg = CatalogSource(locale_dirs=[str(locale_dir)])
    recs, report = catalogs.load(cfg, [("en", "ja"), ("ja", "en"), ("de", "ja")])
    by = Counter((r["src_lang"], r["tgt_lang"]) for r in recs)
    assert by == {("en", "ja"): 3, ("ja", "en"): 3, ("de", "ja"): 3}
    assert {"source": "File", "target": "ファイル"}.items() <= next(r for r in recs if r["src_lang"] == "en"
                                                                 and r["source"] == "File").items()
    pivot = [r for r in recs if r["src_lang"] == "de"]
    assert {(r["source"], r["target"], r["key"]) for r in pivot} == {("Datei", "ファイル", "File"), ("Öffnen", "開く", "Open"),
                                                                      ("Öffne", "開く", "Open")}
    assert report["languages"]["ja"]["catalogs_read"] == 1


def test_bad_catalogs_are_counted_and_named(tmp_path):
    lc = tmp_path / "fr" / "LC_MESSAGES"
    write_mo(lc / "good.mo", [(b"Save", b"Enregistrer")])
    write_mo(lc / "latin.mo", [(b"Open", "Ouvrir le fichier é".encode("utf-8"))], charset="ISO-8859-1")  # UTF-8 bytes
    write_mo(lc / "broken.mo", [(b"Open", b"Ouvrir \xe9")])  # latin-1 bytes declared UTF-8
    write_mo(lc / "unknown.mo", [(b"Open", b"Ouvrir")], charset="CHARSET")
    (lc / "truncated.mo").write_bytes((lc / "good.mo").read_bytes()[:30])
    (lc / "empty.mo").write_bytes(b"")
    with pytest.raises(catalogs.CatalogCharsetError, match="declares charset iso-8859-1 but holds UTF-8"):
        catalogs.read_catalog(lc / "latin.mo")
    with pytest.raises(catalogs.CatalogCharsetError, match="broken.mo"):
        catalogs.read_catalog(lc / "broken.mo")
    with pytest.raises(catalogs.CatalogError, match="truncated.mo: not a readable gettext catalog"):
        catalogs.read_catalog(lc / "truncated.mo")
    recs, report = catalogs.load(CatalogSource(locale_dirs=[str(tmp_path)]), [("en", "fr")])
    assert [(r["source"], r["target"]) for r in recs] == [("Save", "Enregistrer")]
    fr = report["languages"]["fr"]
    assert fr["catalogs_found"] == 6 and fr["catalogs_read"] == 1
    assert fr["catalogs_bad_charset"] == 3 and fr["catalogs_unreadable"] == 2
    assert len(report["errors"]) == 5 and all(".mo" in e for e in report["errors"])


def test_legacy_charset_that_is_right_reads(tmp_path):
    path = write_mo(tmp_path / "de" / "LC_MESSAGES" / "old.mo", [(b"Open", "Öffnen".encode("latin-1"))], charset="ISO-8859-1")
    assert [(m.msgid, m.msgstr) for m in catalogs.read_catalog(path)] == [("Open", "Öffnen")]


def test_locale_preference(tmp_path):
    for loc in ("zh_TW", "zh_CN", "zh_Hans", "zh_HK", "pt_BR", "pt", "sr@latin", "sr"):
        (tmp_path / loc / "LC_MESSAGES").mkdir(parents=True)
    found = catalogs.locales_by_language([str(tmp_path)])
    assert [p.parent.name for p in found["zh"]] == ["zh_CN", "zh_Hans"]  # Simplified only
    assert [p.parent.name for p in found["zh-Hant"]] == ["zh_HK", "zh_TW"]
    assert [p.parent.name for p in found["pt"]] == ["pt", "pt_BR"]
    assert [p.parent.name for p in found["sr"]] == ["sr"]


@pytest.mark.skipif(not Path("/usr/share/locale/de/LC_MESSAGES/gtk30.mo").exists(),
                    reason="needs the system catalogs (scripts/install_catalogs.sh)")
def test_system_catalog_reads():
    msgs = catalogs.read_catalog("/usr/share/locale/de/LC_MESSAGES/gtk30.mo")
    assert len(msgs) > 500 and any(m.context for m in msgs) and any(m.form == "plural" for m in msgs)
