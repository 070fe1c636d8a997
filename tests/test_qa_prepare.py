"""Text-to-text QA examples in the trainer's schema: offsets, windows, labels, and every drop counted."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from mt5study.qa import prepare
from mt5study.qa.config import QAConfig

LINES = [
    "list directory contents and show all entries starting with a dot",
    "do not ignore entries starting with a dot, print the author of each file",
    "Verzeichnisinhalte auflisten und alle Einträge anzeigen, die mit einem Punkt beginnen",
    "ディレクトリの内容をリスト表示する。要素はアルファベット順でソートされます。",
    "question: What does the option -a of ls do? context: -a, --all",
]


@pytest.fixture(scope="module")
def tok(tmp_path_factory) -> prepare.Tokenizer:
    """A 400-piece SentencePiece tokenizer in T5 layout (byte fallback), trained in a second."""
    from mt5study.data.tokenizer import save_t5_tokenizer, train_sentencepiece

    work = tmp_path_factory.mktemp("qa_tok")
    (work / "text.txt").write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    model = train_sentencepiece(work / "text.txt", work / "sp", pieces=400, num_threads=1)
    save_t5_tokenizer(model, work / "tokenizer", extra_ids=20)
    return prepare.Tokenizer(str(work / "tokenizer"))


def cfg(**qa) -> QAConfig:
    base = {"name": "t", "tokenizer": "x", "finetune": {"params": "p.yaml", "checkpoint": "c"},
            "input_length": 48, "target_length": 16, "window": {"stride": 8, "min_context_tokens": 8}}
    return QAConfig.model_validate({**base, **qa})


def example(context: str, answer: str, question: str = "What does -a do?", lang: str = "en", qid: str = "q") -> dict:
    start = context.index(answer)
    return {"id": qid, "lang": lang, "title": "", "question": question, "context": context,
            "answers": {"text": [answer], "answer_start": [start]}}


@pytest.mark.parametrize("text", LINES + ["emoji 🙂 and rare 龘 characters fall back to bytes", "  spaces  "])
def test_offsets_cover_the_text(tok, text):
    ids, starts, ends = tok.encode_offsets(text)
    assert ids == tok.encode(text)
    assert all(0 <= s <= e <= len(text) for s, e in zip(starts, ends))
    assert starts == sorted(starts)
    spans = [span for k, span in enumerate(zip(starts, ends)) if k == 0 or span != (starts[k - 1], ends[k - 1])]
    covered = "".join(text[s:e] for s, e in spans)  # the bytes of one character share its span
    assert covered.replace(" ", "") == text.replace(" ", "")


def test_answer_tokens_are_the_answer(tok):
    text = LINES[3]
    answer = "アルファベット順"
    a = text.index(answer)
    ids, starts, ends = tok.encode_offsets(text)
    first, last = prepare.answer_tokens(starts, ends, a, a + len(answer))
    assert answer in tok.decode(ids[first:last])
    assert tok.decode(ids[first:last]).strip() in text


def test_windows():
    assert prepare.windows(10, 4, 3) == [(0, 4), (3, 7), (6, 10)]
    assert prepare.windows(3, 4, 2) == [(0, 3)]
    assert prepare.windows(9, 4, 4) == [(0, 4), (4, 8), (8, 9)]


def test_long_context_trains_only_windows_with_the_answer(tok):
    context = " ".join(LINES[:3] * 3) + " the answer is here at the end"
    ex = example(context, "the answer is here")
    counts = Counter()
    rows = prepare.example_windows(ex, tok, cfg(), counts)
    assert counts["windowed"] == 1 and counts["windows"] == len(rows) > 2
    trained = [r for r in rows if "labels" in r]
    assert trained and all(r["has_answer"] for r in trained)
    assert [r for r in rows if not r["has_answer"]]  # windows without the answer exist: no labels
    for r in rows:
        assert len(r["input_ids"]) <= 48 and r["input_ids"][-1] == prepare.EOS_ID
        assert "question: What does -a do? context:" in tok.decode(r["input_ids"])
    for r in trained:
        assert tok.decode(r["labels"]) == "the answer is here"
        assert "the answer is here" in tok.decode(r["input_ids"])
    assert counts["trained"] == 1 and counts["windows_with_answer"] == len(trained)


def test_answers_that_cannot_be_labels_are_counted(tok):
    long_answer = " ".join(LINES[:2])
    counts = Counter()
    rows = prepare.example_windows(example(long_answer + " tail", long_answer), tok, cfg(target_length=8), counts)
    assert counts["answer_longer_than_target"] == 1 and not any("labels" in r for r in rows)
    counts = Counter()
    rows = prepare.example_windows(example("x " + long_answer, long_answer), tok,
                                   cfg(input_length=40, window={"stride": 4, "min_context_tokens": 4}), counts)
    assert counts["answer_longer_than_window"] == 1 and not any(r["has_answer"] for r in rows)
    counts = Counter()
    rows = prepare.example_windows(example(LINES[0], "list", question=" ".join(LINES)), tok, cfg(), counts)
    assert rows == [] and counts["question_too_long"] == 1


def test_folder_in_the_trainer_schema(tok, tmp_path):
    from mt5study import batches
    from mt5study.config import DataConfig

    c = cfg()
    train = [example(LINES[i] + " " + LINES[(i + 1) % 4], LINES[(i + 1) % 4][:20], qid=f"t{i}") for i in range(4)]
    val = [example(LINES[3], "アルファベット順", lang="ja", qid="v0"),
           example(" ".join(LINES[:3] * 3), LINES[1][:12], qid="v1"),
           example(LINES[0], "list", question=" ".join(LINES), qid="v2")]  # question too long
    manifest = prepare.write(tmp_path / "qa", {"train": train, "validation": val}, {"kind": "test"}, tok, c,
                             vocab_size=tok.size, fp="f")
    assert manifest["vocab_size"] == tok.size and manifest["counts"]["validation"]["en"]["question_too_long"] == 1
    splits = batches.load_splits(DataConfig(path=str(tmp_path / "qa"), input_length=48, target_length=16), seed=0)
    assert len(splits["train"]) == manifest["num_examples"]["train"] >= 4
    row = splits["train"][0]
    assert len(row["input_ids"]) == 48 and len(row["labels"]) == 16
    assert -100 in row["labels"] and row["labels"][row["labels"].index(-100) - 1] == prepare.EOS_ID
    import datasets

    ev = datasets.load_from_disk(str(tmp_path / "qa" / "eval"))
    assert set(ev["id"]) == {"v0", "v1"}  # v2 has no window: evaluation answers it with ""
    assert sum(ev["has_answer"]) >= 2
    examples = [json.loads(l) for l in (tmp_path / "qa" / "examples" / "validation.jsonl").read_text().splitlines()]
    assert [e["id"] for e in examples] == ["v0", "v1", "v2"]
    table = prepare.sizes(tmp_path / "qa")
    assert set(table.columns) >= {"split", "lang", "questions", "training_windows", "answer_longer_than_target"}


def test_no_trainable_window_is_an_error(tok, tmp_path):
    bad = [example(LINES[0] + " and more", LINES[0], qid="t")]
    with pytest.raises(ValueError, match="no example left"):
        prepare.write(tmp_path / "qa", {"train": bad, "validation": bad}, {}, tok, cfg(target_length=4),
                      vocab_size=tok.size, fp="f")


def test_tokenizer_folder_resolution(tmp_path):
    (tmp_path / "etl" / "tokenizer").mkdir(parents=True)
    assert prepare.resolve_tokenizer(str(tmp_path / "etl")) == str(tmp_path / "etl" / "tokenizer")
    assert prepare.resolve_tokenizer(str(tmp_path / "etl" / "tokenizer")) == str(tmp_path / "etl" / "tokenizer")
    assert prepare.resolve_tokenizer("google/mt5-small") == "google/mt5-small"
    with pytest.raises(FileNotFoundError, match="no such folder"):
        prepare.resolve_tokenizer(str(tmp_path / "missing"))
