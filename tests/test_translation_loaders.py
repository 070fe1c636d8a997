"""Parallel text from files, from `datasets` sets (WMT/OPUS and FLORES layouts, read from local
files of the same schema) and from man pages aligned by flag; bad input named."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter

import pytest

from mt5study.qa.manpages import OptionEntry, Page
from mt5study.translation import loaders, manpages
from mt5study.translation.config import FileSource, HubSource, UnknownLanguageError


def test_tsv_and_jsonl_with_both_directions(tmp_path):
    (tmp_path / "a.tsv").write_text("Open file\tDatei öffnen\n\nSave\tSpeichern\n", encoding="utf-8")
    (tmp_path / "b.jsonl").write_text(json.dumps({"source": "Quit", "target": "Beenden"}) + "\n", encoding="utf-8")
    recs, report = loaders.load_files(FileSource(path=str(tmp_path / "*.*"), src_lang="en", tgt_lang="de"),
                                      [("en", "de"), ("de", "en"), ("en", "fr")])
    by = Counter((r["src_lang"], r["tgt_lang"]) for r in recs)
    assert by == {("en", "de"): 3, ("de", "en"): 3}
    back = next(r for r in recs if r["src_lang"] == "de" and r["target"] == "Save")
    assert back["source"] == "Speichern" and back["key"] == "Save"  # the split key is the English side
    assert report["pairs_read"] == 3 and report["blank_lines"] == 1 and report["files"] == 2


@pytest.mark.parametrize("name, text, match", [
    ("bad.tsv", "one column only\n", "bad.tsv:1: expected 2 tab-separated columns"),
    ("bad.jsonl", '{"source": "x"}\n', "bad.jsonl:1: expected a JSON object with source and target"),
    ("bad.jsonl", "not json\n", "bad.jsonl:1"),
])
def test_malformed_files_are_named(tmp_path, name, text, match):
    (tmp_path / name).write_text(text, encoding="utf-8")
    with pytest.raises(loaders.SourceReadError, match=match):
        loaders.load_files(FileSource(path=str(tmp_path / name), src_lang="en", tgt_lang="de"), [("en", "de")])


def test_bad_file_inputs(tmp_path):
    (tmp_path / "latin.tsv").write_bytes("Open\t\xd6ffnen\n".encode("latin-1"))
    with pytest.raises(loaders.SourceReadError, match="latin.tsv: not UTF-8"):
        loaders.load_files(FileSource(path=str(tmp_path / "latin.tsv"), src_lang="en", tgt_lang="de"), [("en", "de")])
    with pytest.raises(FileNotFoundError, match="no file matches"):
        loaders.load_files(FileSource(path=str(tmp_path / "none*.tsv"), src_lang="en", tgt_lang="de"), [("en", "de")])
    with pytest.raises(UnknownLanguageError, match="unknown language 'xx'"):
        loaders.load_files(FileSource(path=str(tmp_path / "latin.tsv"), src_lang="en", tgt_lang="xx"), [("en", "de")])


def test_wmt_opus_layout_from_local_files(tmp_path):
    rows = [{"translation": {"de": "Hallo Welt", "en": "Hello world"}}, {"translation": {"de": "Danke", "en": "Thanks"}}]
    (tmp_path / "wmt.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    recs, report = loaders.load_hub(HubSource(path=str(tmp_path / "wmt.jsonl")), [("de", "en"), ("en", "fr")])
    assert [(r["source"], r["target"], r["key"]) for r in recs] == [("Hallo Welt", "Hello world", "Hello world"),
                                                                  ("Danke", "Thanks", "Thanks")]
    assert report["rows"] == 2 and report["de-en"] == 2 and report["layout"] == "translation"


def test_flores_layout_from_local_files(tmp_path):
    import pandas as pd

    pd.DataFrame({"id": [1, 2], "sentence_eng_Latn": ["A cat.", "A dog."], "sentence_jpn_Jpan": ["猫。", "犬。"]}
                 ).to_parquet(tmp_path / "flores.parquet")
    recs, _ = loaders.load_hub(HubSource(path=str(tmp_path / "flores.parquet"), layout="flores"), [("en", "ja")])
    assert [(r["source"], r["target"]) for r in recs] == [("A cat.", "猫。"), ("A dog.", "犬。")]
    with pytest.raises(loaders.SourceReadError, match="layout translation needs a `translation` column"):
        loaders.load_hub(HubSource(path=str(tmp_path / "flores.parquet")), [("en", "ja")])


def test_hub_source_names_one_origin():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one of"):
        HubSource(dataset="wmt/wmt19", path="x.jsonl")


def _page(lang, command, entries):
    return Page(lang=lang, command=command, path=f"/{lang}/{command}.1",
                entries=[[OptionEntry(tag=t, paragraphs=[d]) for t, d in entries]])


def test_manpage_options_align_by_flag():
    en = _page("en", "ls", [("-a, --all", "do not ignore entries starting with ."), ("-l", "use a long listing format"),
                            ("-Z", "print security context")])
    de = _page("de", "ls", [("-l", "ein langes Listenformat verwenden"), ("-a, --all", "Einträge mit . nicht ignorieren"),
                            ("-q", "nicht druckbare Zeichen als ? ausgeben"), ("-q", "doppelt")])
    counts: Counter = Counter()
    en_opts, _ = manpages.page_options(en)
    de_opts, repeated = manpages.page_options(de)
    assert repeated == 1 and "-q" not in de_opts  # a flag documented twice is ambiguous: not paired
    pairs = manpages.align(en_opts, de_opts, counts)
    assert pairs == [("-a", "do not ignore entries starting with .", "Einträge mit . nicht ignorieren"),
                     ("-l", "use a long listing format", "ein langes Listenformat verwenden")]
    assert counts == {"flags_aligned": 2, "flags_only_english": 1, "flags_only_translation": 0}


@pytest.mark.skipif(not (shutil.which("groff") and os.path.isdir("/usr/share/man/de/man1")),
                    reason="needs groff and the translated man pages (scripts/install_manpages.sh)")
def test_installed_manpages_give_pairs():
    from mt5study.translation.config import ManpageSource

    recs, report = manpages.load(ManpageSource(max_commands_per_language=3), [("en", "de")])
    assert recs and all(r["origin"].startswith("manpages/") for r in recs)
    assert report["languages"]["de"]["pages_read"] == 3


def test_sources_are_combined_with_a_report_each(tmp_path):
    from mt5study.translation.config import CatalogSource
    from test_translation_catalogs import write_mo

    write_mo(tmp_path / "locale" / "de" / "LC_MESSAGES" / "app.mo", [(b"Save", b"Speichern"), (b"Quit", b"Beenden")])
    (tmp_path / "more.tsv").write_text("Open file\tDatei \xf6ffnen\n", encoding="utf-8")
    recs, reports = loaders.load([CatalogSource(locale_dirs=[str(tmp_path / "locale")]),
                                  FileSource(path=str(tmp_path / "more.tsv"), src_lang="en", tgt_lang="de")],
                                 [("en", "de"), ("de", "en")])
    assert [r["kind"] for r in reports] == ["catalogs", "files"]
    assert reports[0]["records"] == {"en-de": 2, "de-en": 2} and reports[1]["records"] == {"en-de": 1, "de-en": 1}
    assert len(recs) == 6 and {r["key"] for r in recs} == {"Save", "Quit", "Open file"}
