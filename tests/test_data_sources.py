"""Sources: local files (good and bad input), mC4 through datasets on local files, manual pages."""

import gzip
import json
import shutil

import pytest

from mt5study.data.config import FilesSource, MC4Source, ManpagesSource
from mt5study.data.samples import make_documents, write_jsonl_corpus
from mt5study.data.sources import (
    BadRecords, FilesReader, ManpagesReader, MC4Reader, SourceError, locale_to_lang, render_manpage, tidy_rendered,
)


def _docs(reader, lang, policy="skip", limit=None, fraction=1.0):
    bad = BadRecords(policy=policy)
    return list(reader.documents(lang, limit, 0, bad, fraction)), bad


def test_files_source_reads_jsonl_gz_txt_and_folders(tmp_path):
    write_jsonl_corpus(tmp_path, {"en": 5, "de": 4})
    (tmp_path / "fr.txt").write_text("Premier document.\nDeuxième document.\n\nTroisième.\n", encoding="utf-8")
    (tmp_path / "es").mkdir()
    (tmp_path / "es" / "part-1.jsonl").write_text(json.dumps({"text": "Hola."}) + "\n", encoding="utf-8")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    reader = FilesReader(FilesSource(path=str(tmp_path)))
    assert reader.languages() == ["de", "en", "es", "fr"]
    en, bad = _docs(reader, "en")
    assert [d.text for d in en] == make_documents("en", 5) and bad.count == 0
    assert en[0].id == "en.jsonl.gz:1" and en[0].lang == "en"
    assert [d.text for d in _docs(reader, "fr")[0]] == ["Premier document.", "Deuxième document.", "Troisième."]
    blocks = FilesReader(FilesSource(path=str(tmp_path), txt_documents="blank_line"))
    assert [d.text for d in _docs(blocks, "fr")[0]] == ["Premier document.\nDeuxième document.", "Troisième."]
    assert [d.text for d in _docs(reader, "es")[0]] == ["Hola."]
    assert len(_docs(reader, "en", limit=2)[0]) == 2


def test_fraction_is_seeded_and_roughly_right(tmp_path):
    write_jsonl_corpus(tmp_path, {"en": 400})
    reader = FilesReader(FilesSource(path=str(tmp_path)))
    a = [d.id for d in _docs(reader, "en", fraction=0.25)[0]]
    b = [d.id for d in _docs(reader, "en", fraction=0.25)[0]]
    assert a == b and 60 < len(a) < 140  # binomial(400, 0.25): mean 100, sd 8.7


def test_missing_and_empty_source(tmp_path):
    with pytest.raises(SourceError, match="does not exist"):
        FilesReader(FilesSource(path=str(tmp_path / "nope"))).languages()
    with pytest.raises(SourceError, match="is empty"):
        FilesReader(FilesSource(path=str(tmp_path))).languages()


def _bad_file(tmp_path):
    good = json.dumps({"text": "fine"})
    lines = [good.encode(), b'{"text": "unterminated', good.encode(), b'{"text": "caf\xe9"}', b'{"other": 1}', good.encode()]
    path = tmp_path / "en.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def test_bad_lines_are_skipped_and_counted_with_file_and_line(tmp_path):
    path = _bad_file(tmp_path)
    docs, bad = _docs(FilesReader(FilesSource(path=str(tmp_path))), "en")
    assert [d.id for d in docs] == ["en.jsonl:1", "en.jsonl:3", "en.jsonl:6"]
    assert bad.count == 3
    assert bad.messages[0].startswith(f"{path}:2: malformed JSON")
    assert bad.messages[1].startswith(f"{path}:4: not valid UTF-8")
    assert bad.messages[2].startswith(f"{path}:5: no string field 'text'")


@pytest.mark.parametrize("line,what", [(2, "malformed JSON"), (4, "not valid UTF-8")])
def test_bad_lines_are_fatal_by_param(tmp_path, line, what):
    path = _bad_file(tmp_path)
    if line == 4:  # make the UTF-8 error the first one
        lines = path.read_bytes().split(b"\n")
        lines[1] = json.dumps({"text": "ok"}).encode()
        path.write_bytes(b"\n".join(lines))
    with pytest.raises(SourceError, match=f"^{path}:{line}: {what}"):
        _docs(FilesReader(FilesSource(path=str(tmp_path))), "en", policy="error")


def test_truncated_gzip(tmp_path):
    write_jsonl_corpus(tmp_path, {"en": 200})
    path = tmp_path / "en.jsonl.gz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    docs, bad = _docs(FilesReader(FilesSource(path=str(tmp_path))), "en")
    assert 0 < len(docs) < 200 and bad.count == 1
    assert bad.messages[0].startswith(f"{path}: truncated or corrupt gzip after line {len(docs)}")
    with pytest.raises(SourceError, match="truncated or corrupt gzip"):
        _docs(FilesReader(FilesSource(path=str(tmp_path))), "en", policy="error")


def test_mc4_source_streams_local_gzip_jsonl_through_datasets(tmp_path):
    write_jsonl_corpus(tmp_path, {"de": 7, "fr": 5}, mc4_schema=True)
    first = gzip.decompress((tmp_path / "c4-de.tfrecord-00000-of-00001.json.gz").read_bytes()).split(b"\n")[0]
    assert set(json.loads(first)) == {"text", "timestamp", "url"}  # mC4's schema
    cfg = MC4Source(dataset="json", config=None, data_files=str(tmp_path / "c4-{lang}.tfrecord-*.json.gz"))
    reader = MC4Reader(cfg)
    de, bad = _docs(reader, "de")
    assert [d.text for d in de] == make_documents("de", 7) and bad.count == 0
    assert de[0].id == "https://example.org/de/0" and de[0].lang == "de"
    assert len(_docs(reader, "fr", limit=3)[0]) == 3
    with pytest.raises(SourceError, match="no files match"):
        _docs(reader, "it")
    assert reader.describe()["dataset"] == "json"


def test_mc4_truncated_gzip_names_the_file(tmp_path):
    write_jsonl_corpus(tmp_path, {"de": 300}, mc4_schema=True)
    path = tmp_path / "c4-de.tfrecord-00000-of-00001.json.gz"
    path.write_bytes(path.read_bytes()[:-200])
    reader = MC4Reader(MC4Source(dataset="json", config=None, data_files=str(tmp_path / "c4-{lang}.*.json.gz")))
    docs, bad = _docs(reader, "de")
    assert bad.count == 1 and str(path) in bad.messages[0]
    with pytest.raises(SourceError, match=str(path)):
        _docs(reader, "de", policy="error")


def test_locale_codes_and_tidy_rendering():
    assert locale_to_lang("pt_BR") == "pt" and locale_to_lang("zh_TW") == "zh" and locale_to_lang("de") == "de"
    assert locale_to_lang("sr@latin") == "sr-Latn"
    text = "LS(1)     User Commands     LS(1)\n\nNAME\n       ls  -  list\n\n\n\nGNU    2024    LS(1)\n"
    assert tidy_rendered(text) == "NAME\nls - list"


manpages = pytest.mark.skipif(shutil.which("groff") is None or not ManpagesReader(ManpagesSource())._dpkg_packages(),
                              reason="manual pages not installed (scripts/install_manpages.sh)")


@manpages
def test_manpages_source_finds_languages_and_renders():
    reader = ManpagesReader(ManpagesSource())
    langs = reader.languages()
    assert "en" in langs and len(langs) >= 2
    other = next(lang for lang in langs if lang != "en")
    docs, bad = _docs(reader, other, limit=3)
    assert len(docs) == 3 and bad.count == 0
    assert all(len(d.text) > 50 and "\x08" not in d.text and "\x1b" not in d.text for d in docs)
    record = reader.describe()
    assert "manpages" in record["packages"] and record["pages_per_language"]["en"] > 0


@manpages
def test_manpage_aliases_are_skipped(tmp_path):
    alias = tmp_path / "alias.1"
    alias.write_text(".so man1/other.1\n")
    assert render_manpage(str(alias)) is None


@pytest.mark.skipif(shutil.which("groff") is None, reason="groff not installed (scripts/install_manpages.sh)")
def test_manpages_source_on_a_folder_of_pages(tmp_path):
    page = ('.TH HELLO 1 "2024" "test" "User Commands"\n.SH {name}\nhello \\- {what}\n'
            ".SH {desc}\n{text}\n.PP\n{text}\n")
    pages = {
        "man1/hello.1": page.format(name="NAME", what="say hello", desc="DESCRIPTION",
                                    text="This program prints a friendly greeting and exits."),
        "de/man1/hello.1.gz": page.format(name="BEZEICHNUNG", what="grüßen", desc="BESCHREIBUNG",
                                          text="Dieses Programm gibt einen freundlichen Gruß aus und endet."),
        "pt_BR/man1/hello.1": page.format(name="NOME", what="saudar", desc="DESCRIÇÃO",
                                          text="Este programa imprime uma saudação amigável e termina."),
        "de/man1/alias.1": ".so man1/hello.1\n",
    }
    for rel, text in pages.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        data = text.encode("utf-8")
        path.write_bytes(gzip.compress(data) if rel.endswith(".gz") else data)
    (tmp_path / "man1" / "link.1").symlink_to(tmp_path / "man1" / "hello.1")
    reader = ManpagesReader(ManpagesSource(man_dir=str(tmp_path), packages_only=False))
    assert reader.languages() == ["de", "en", "pt"]
    de, bad = _docs(reader, "de")
    assert len(de) == 1 and bad.count == 0  # the .so alias is skipped
    assert de[0].id == "de/man1/hello.1.gz"
    assert de[0].text.splitlines()[:2] == ["BEZEICHNUNG", "hello - grüßen"]
    assert "Dieses Programm gibt einen freundlichen Gruß aus und endet." in de[0].text
    assert "HELLO(1)" not in de[0].text  # running header and footer dropped
    assert len(_docs(reader, "en")[0]) == 1  # the symlink is an alias, not a second page
