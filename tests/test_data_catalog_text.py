"""The catalogs' text as a language-specific pretraining corpus: one document per catalog and
language, cleaned as the translation study cleans, held-out strings left out in every language."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml


from mt5study.data.catalog_text import CatalogTextReader, heldout_rule
from mt5study.data.config import CatalogText, SourceConfig
from mt5study.data.sources import BadRecords, SourceError, make_source
from mt5study.translation.prepare import split_of
from tests.test_translation_catalogs import write_mo

# English strings, translated into German and French; enough that some fall in the held-out splits.
WORDS = [f"Open file number {i}" for i in range(60)]


def _catalogs(root: Path) -> Path:
    write_mo(root / "de" / "LC_MESSAGES" / "app.mo",
             [(w.encode(), f"Datei Nummer {w.split()[-1]} öffnen".encode()) for w in WORDS]
             + [(b"_Quit", b"_Beenden"), (b"Close", b""), (b"Missing %s", b"Fehlt")])
    write_mo(root / "fr" / "LC_MESSAGES" / "app.mo",
             [(w.encode(), f"Ouvrir le fichier {w.split()[-1]}".encode()) for w in WORDS[:30]])
    write_mo(root / "fr" / "LC_MESSAGES" / "other.mo", [(b"Save", b"Enregistrer")])
    (root / "it" / "LC_MESSAGES").mkdir(parents=True)
    (root / "it" / "LC_MESSAGES" / "app.mo").write_bytes(b"not a catalog")
    return root


@pytest.fixture
def translation_params(tmp_path) -> Path:
    doc = {"translation": {"name": "t", "seed": 3, "pairs": ["en-de"], "tokenizer": "outputs/etl", "sources": [{"kind": "catalogs"}],
                           "splits": {"validation_fraction": 0.2, "test_fraction": 0.3},
                           "finetune": {"params": "params/cpu/qa_finetune.yaml", "checkpoint": "outputs/pretrain/model"}}}
    path = tmp_path / "translation.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def _heldout(english: str) -> bool:
    return split_of(english, 3, 0.2, 0.3) != "train"


def test_documents_per_catalog_cleaned_and_heldout_left_out(tmp_path, translation_params):
    reader = CatalogTextReader(CatalogText(locale_dirs=[str(_catalogs(tmp_path / "locale"))],
                                           exclude_heldout_of=str(translation_params)))
    bad = BadRecords()
    de = list(reader.documents("de", bad))
    assert [d.id for d in de] == ["catalogs/de/app"]
    lines = de[0].text.split("\n")
    kept = [w for w in WORDS + ["Quit"] if not _heldout(w)]
    assert 0 < len(kept) < len(WORDS)  # the rule leaves some out: the test can fail both ways
    german = {w: f"Datei Nummer {w.split()[-1]} öffnen" for w in WORDS} | {"Quit": "Beenden"}
    assert sorted(lines) == sorted(german[w] for w in kept)
    c = reader.counts
    assert c["heldout"] == len(WORDS) + 1 - len(kept) and c["untranslated"] == 1 and c["format_mismatch"] == 1
    assert c["mnemonic"] == 1 and c["documents"] == 1 and c["lines"] == len(lines)
    # English: the msgids of every language's catalogs of a domain, each once, held-out ones out
    en = {d.id: d.text.split("\n") for d in reader.documents("en", bad)}
    assert set(en) == {"catalogs/en/app"} | (set() if _heldout("Save") else {"catalogs/en/other"})
    assert sorted(en["catalogs/en/app"]) == sorted(kept)
    assert not any(_heldout(x) for doc in en.values() for x in doc)
    # an unreadable catalog is counted and named, not skipped silently
    assert list(reader.documents("it", bad)) == []
    assert reader.counts["catalogs_bad"] >= 1 and any("app.mo" in m for m in bad.messages)


def test_without_rule_nothing_is_left_out(tmp_path):
    reader = CatalogTextReader(CatalogText(locale_dirs=[str(_catalogs(tmp_path / "locale"))]))
    (doc,) = [d for d in reader.documents("fr", BadRecords()) if d.id.endswith("/app")]
    assert len(doc.text.split("\n")) == 30 and reader.counts["heldout"] == 0


def test_main_source_documents_come_first_then_catalogs(tmp_path):
    files = tmp_path / "files"
    files.mkdir()
    (files / "de.txt").write_text("Ein Dokument.\nNoch eins.\n")
    (files / "en.txt").write_text("A document.\n")
    cfg = SourceConfig(kind="files", files={"path": str(files)},
                       catalogs={"locale_dirs": [str(_catalogs(tmp_path / "locale"))]})
    source = make_source(cfg)
    assert source.languages() == ["de", "en"]  # the main source's languages: fr and it are not added
    ids = [d.id for d in source.documents("de", None, 0, BadRecords())]
    assert ids[-1] == "catalogs/de/app" and len(ids) == 3
    assert "catalogs" in source.describe() and source.describe()["kind"] == "files"


def test_bad_rule_file_is_named(tmp_path):
    with pytest.raises(SourceError, match="nope.yaml does not exist"):
        heldout_rule(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("translation: {name: t, pairs: [en-xx]}\n")
    with pytest.raises(SourceError, match="bad.yaml is not valid translation params"):
        heldout_rule(str(bad))


def test_sharded_engine_reads_the_same_catalog_documents(tmp_path):
    from mt5study.data.config import ETLConfig
    from mt5study.data.plan import make_plan
    from mt5study.data.stages import shard_documents

    files = tmp_path / "files"
    files.mkdir()
    (files / "de.txt").write_text("Ein Dokument.\n")
    locale = str(_catalogs(tmp_path / "locale"))
    cfg = ETLConfig(source={"kind": "files", "files": {"path": str(files)}, "catalogs": {"locale_dirs": [locale]}},
                    engine={"executor": "local"})
    (shard,) = [s for s in make_plan(cfg)["shards"] if s.get("kind") == "catalogs"]
    assert shard["id"] == "de-catalogs" and [Path(f["path"]).name for f in shard["files"]] == ["app.mo"]
    inline = [(d.id, d.text) for d in make_source(cfg.source).documents("de", None, 0, BadRecords())][1:]
    assert list(shard_documents(cfg, shard, BadRecords())) == inline


def test_rule_path_is_relative_to_the_repository_root(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # papermill runs the ETL notebook in notebooks/
    rule = heldout_rule("params/cpu/translation.yaml")
    assert rule["params"] == "params/cpu/translation.yaml" and rule["test_fraction"] > 0


def test_catalog_table_reads_the_manifest_counts():
    from mt5study.data.report import catalog_table

    m = {"source": {"catalog_counts": {"fr": {"catalogs_read": 2, "lines": 7, "heldout": 3}, "de": {"lines": 1}}}}
    t = catalog_table(m)
    assert list(t.index) == ["de", "fr"] and t.loc["fr", "heldout"] == 3 and t.loc["de", "catalogs_read"] == 0
    assert catalog_table({"source": {}}).empty
