"""SQuAD-format loaders on local files in each schema; the hub path with datasets stubbed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mt5study.qa import loaders
from mt5study.qa.config import QASource

CTX = "Helsinki is the capital of Finland. It lies on the coast."


def squad_nested(path: Path) -> Path:
    """SQuAD v1.1/v2.0 layout (also the original XQuAD, MLQA and TyDi GoldP files)."""
    doc = {"version": "1.1", "data": [{"title": "Helsinki", "paragraphs": [{"context": CTX, "qas": [
        {"id": "ok", "question": "What is the capital of Finland?", "answers": [{"text": "Helsinki", "answer_start": 0}]},
        {"id": "two", "question": "Of what?", "answers": [{"text": "Finland", "answer_start": 27},
                                                        {"text": "Finland", "answer_start": 3}]},  # 2nd misplaced
        {"id": "moved", "question": "Where?", "answers": [{"text": "the coast", "answer_start": 5}]},
        {"id": "impossible", "question": "Who?", "answers": [], "is_impossible": True},
        {"id": "blank", "question": "What?", "answers": [{"text": "  ", "answer_start": 0}]},
    ]}]}]}
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def flat(rec_id: str, question: str, text: str, start: int, **extra) -> dict:
    """Hugging Face layout of SQuAD / XQuAD / MLQA / TyDi GoldP (secondary_task)."""
    return {"id": rec_id, "title": "t", "context": CTX, "question": question,
            "answers": {"text": [text], "answer_start": [start]}, **extra}


def test_nested_squad_file_checks_and_counts(tmp_path):
    path = squad_nested(tmp_path / "squad.json")
    rows, report = loaders.load_split([loaders.QASet(path=str(path), lang="en")], None, None, 0, "train")
    by_id = {r["id"]: r for r in rows}
    assert sorted(by_id) == ["ok", "two"]
    assert by_id["two"]["answers"] == {"text": ["Finland"], "answer_start": [27]}  # only the located answer
    counts = report["languages"]["en"]
    assert counts["kept"] == 2 and counts["empty_answer"] == 2
    assert counts["answer_not_at_start"] == 1 and counts["some_answers_not_at_start"] == 1
    assert any("'the coast' not at offset 5" in m for m in report["messages"])


def test_tydi_goldp_jsonl_language_from_id(tmp_path):
    path = tmp_path / "tydi.jsonl"
    recs = [flat("finnish-1-0", "Mikä on Suomen pääkaupunki?", "Helsinki", 0),
            flat("english-2-0", "What is the capital?", "Helsinki", 0),
            flat("klingon-3-0", "?", "Helsinki", 0)]
    path.write_text("\n".join(json.dumps(r) for r in recs) + "\n{not json\n", encoding="utf-8")
    rows, report = loaders.load_split([loaders.QASet(path=str(path))], None, None, 0, "train")
    assert sorted(r["lang"] for r in rows) == ["en", "fi"]
    assert report["languages"]["?"] == {"kept": 0, "read": 0, "no_language": 1, "malformed": 1}
    assert any(f"{path}:4" in m and "malformed JSON" in m for m in report["messages"])


def test_xquad_style_files_per_language(tmp_path):
    for lang in ("de", "es"):
        (tmp_path / f"xquad.{lang}.json").write_text(json.dumps(
            [flat(f"{lang}-1", "Frage?", "Finland", 27), flat(f"{lang}-2", "Frage?", "Finland", 0)]), encoding="utf-8")
    s = loaders.QASet(path=str(tmp_path / "xquad.{lang}.json"))
    rows, report = loaders.load_split([s], ["de", "es"], None, 0, "validation")
    assert sorted((r["lang"], r["id"]) for r in rows) == [("de", "de-1"), ("es", "es-1")]
    assert report["languages"]["de"]["answer_not_at_start"] == 1


def test_malformed_records_are_counted_not_guessed(tmp_path):
    path = tmp_path / "bad.jsonl"
    recs = [{"id": "a", "context": CTX, "question": "q", "answers": {"text": ["Helsinki"]}},  # no answer_start
            {"id": "b", "context": CTX, "question": 7, "answers": {"text": ["Helsinki"], "answer_start": [0]}},
            flat("c", "q", "Helsinki", 0, lang="fi")]
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    rows, report = loaders.load_split([loaders.QASet(path=str(path), lang="fi")], None, None, 0, "train")
    assert [r["id"] for r in rows] == ["c"] and report["languages"]["fi"]["malformed"] == 2


def test_a_file_with_wrong_fields_is_a_named_error(tmp_path):
    path = tmp_path / "wrong.jsonl"
    recs = [{"id": "a", "passage": CTX, "query": "q", "answer": "Helsinki"}] * 3  # not SQuAD's field names
    path.write_text("\n".join(json.dumps(r) for r in recs), encoding="utf-8")
    with pytest.raises(loaders.QADataError, match=rf"QA set {path}: no record has the fields .*first: {path}:1"):
        loaders.load_split([loaders.QASet(path=str(path), lang="fi")], None, None, 0, "train")


def test_a_language_without_validation_records_is_a_named_error(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps(flat("q", "q", "Helsinki", 0, lang="fi")), encoding="utf-8")
    s = [loaders.QASet(path=str(path))]
    with pytest.raises(loaders.QADataError, match=r"validation split: no usable record in language\(s\) \['xx'\]"):
        loaders.load_split(s, ["fi", "xx"], None, 0, "validation")
    rows, _ = loaders.load_split(s, ["fi", "xx"], None, 0, "train")  # training may miss a language (zero-shot)
    assert [r["lang"] for r in rows] == ["fi"]


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no file matches"):
        loaders.load_split([loaders.QASet(path=str(tmp_path / "nope.json"))], None, None, 0, "train")


def test_limit_is_a_seeded_sample_per_language(tmp_path):
    path = tmp_path / "many.jsonl"
    path.write_text("\n".join(json.dumps(flat(f"q{i}", "q", "Helsinki", 0)) for i in range(20)), encoding="utf-8")
    s = [loaders.QASet(path=str(path), lang="fi")]
    a, report = loaders.load_split(s, None, 5, 0, "train")
    b, _ = loaders.load_split(s, None, 5, 0, "train")
    c, _ = loaders.load_split(s, None, 5, 1, "train")
    assert [r["id"] for r in a] == [r["id"] for r in b] != [r["id"] for r in c]
    assert len(a) == 5 and report["languages"]["fi"] == {"kept": 5, "read": 20}


def test_hub_sets_go_through_datasets(monkeypatch):
    """TyDi GoldP / MLQA by name, configuration and split (datasets stubbed: no network here)."""
    import datasets

    calls = []

    def fake_load(name, config=None, split=None, **kw):
        calls.append((name, config, split))
        lang = config.split(".")[-1] if config and config.startswith("mlqa") else None
        return [flat(f"{lang or 'finnish'}-{split}-1", "q", "Helsinki", 0)]

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    source = QASource(kind="hub", languages=["de", "fi"],
                      train=[{"dataset": "google-research-datasets/tydiqa", "config": "secondary_task", "split": "train"}],
                      validation=[{"dataset": "facebook/mlqa", "config": "mlqa.{lang}.{lang}", "split": "validation"}])
    splits, _ = loaders.load(source, 0)
    assert calls == [("google-research-datasets/tydiqa", "secondary_task", "train"),
                     ("facebook/mlqa", "mlqa.de.de", "validation"), ("facebook/mlqa", "mlqa.fi.fi", "validation")]
    assert [r["lang"] for r in splits["train"]] == ["fi"]
    assert sorted(r["lang"] for r in splits["validation"]) == ["de", "fi"]


def test_hub_failure_names_the_set(monkeypatch):
    import datasets

    def offline(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(RuntimeError, match=r"google/xquad \[xquad.de\] split validation: cannot load"):
        list(loaders.raw_records(loaders.QASet(dataset="google/xquad", config="xquad.de", split="validation")))


def test_source_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="needs `train` and `validation`"):
        QASource(kind="files", train=[{"path": "a.json"}])
    with pytest.raises(ValidationError, match="needs `dataset`"):
        QASource(kind="hub", train=[{"path": "a.json"}], validation=[{"path": "b.json"}])
    with pytest.raises(ValidationError, match="exactly one"):
        loaders.QASet(dataset="x/y", path="a.json")
    with pytest.raises(ValidationError, match="no question template"):
        QASource(kind="manpages", languages=["xx"])
