"""sacrebleu scores with the right tokenizer per target and their signatures; greedy and beam
translations of every test string from a saved model folder, cached while the run is unchanged."""

from __future__ import annotations

import pytest

from mt5study import records
from mt5study.translation import evaluate, prepare
from mt5study.translation.config import EvalConfig


def test_tokenizer_per_target_language():
    assert evaluate.bleu_tokenizer("de") == "13a" and evaluate.bleu_tokenizer("zh") == "zh"
    assert evaluate.bleu_tokenizer("ko") == "char"
    assert evaluate.bleu_tokenizer("ja") in ("ja-mecab", "char")


def test_scores_and_signatures():
    refs = ["Die Datei konnte nicht geöffnet werden", "Alle Änderungen wurden gespeichert"]
    perfect = evaluate.score(refs, refs, "de")
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["chrf"] == pytest.approx(100.0)
    assert "tok:13a" in perfect["bleu_signature"] and "nw:2" in perfect["chrf_signature"]  # chrF++: word bigrams
    wrong = evaluate.score(["Katze", "Hund"], refs, "de")
    assert wrong["bleu"] < 1 and wrong["chrf"] < 20 and wrong["segments"] == 2
    zh = evaluate.score(["打开文件"], ["打开文件夹"], "zh")
    assert "tok:zh" in zh["bleu_signature"] and 0 < zh["bleu"] < 100  # characters, not one "word"
    ja = evaluate.score(["ファイルを開く"], ["ファイルを開きます"], "ja")
    assert f"tok:{evaluate.bleu_tokenizer('ja')}" in ja["bleu_signature"]


class CharTokenizer:
    name, size = "chars", 300

    def encode(self, text: str) -> list[int]:
        return [3 + ord(c) % 256 for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(chr(i - 3) for i in ids if i > 2 and i - 3 < 128)

    def fingerprint(self) -> str:
        return "chars"


def test_evaluate_run_greedy_and_beam(tmp_path):
    from mt5study.model import build
    from mt5study.translation.config import TranslationConfig

    cfg = TranslationConfig.model_validate({
        "name": "t", "pairs": ["en-de", "en-fr"], "sources": [{"kind": "files", "path": "x", "src_lang": "en", "tgt_lang": "de"}],
        "tokenizer": "tok", "input_length": 60, "target_length": 30,
        "finetune": {"params": "params/cpu/qa_finetune_smoke.yaml", "checkpoint": "ckpt"}})
    rs = [{"src_lang": "en", "tgt_lang": t, "source": f"Open {i}", "target": f"{w} {i}", "key": f"Open {i}", "origin": "x"}
          for i in range(60) for t, w in (("de", "Öffnen"), ("fr", "Ouvrir"))]
    per_pair, counts = prepare.build_splits(rs, cfg, CharTokenizer())
    prepare.write(tmp_path / "data", per_pair, counts, [], CharTokenizer(), cfg, 300, "fp")
    run = tmp_path / "run"
    build("tiny", vocab_size=300).save_pretrained(run / "model")
    records.write_json_atomic(run / "summary.json", {"status": "completed", "steps": 1, "wall_seconds": 1.0})
    ev = EvalConfig(num_beams=2, max_new_tokens=5, batch_size=4)
    table, scores = evaluate.evaluate_run(run, tmp_path / "data", ev, CharTokenizer(), tmp_path / "eval")
    n_test = {p: len(per_pair[p]["test"]) for p in cfg.pairs}
    assert set(scores["decoding"]) == {"greedy", "beam2"} and set(scores["pair"]) == {"en-de", "en-fr"}
    for _, row in scores.iterrows():
        assert row["segments"] == n_test[row["pair"]] and 0 <= row["chrf"] <= 100
    assert len(table) == 2 * sum(n_test.values())
    assert (tmp_path / "eval" / "scores.json").exists()
    again_table, _ = evaluate.evaluate_run(run, tmp_path / "data", ev, CharTokenizer(), tmp_path / "eval")
    assert again_table.equals(table)  # cached: the same run, data and eval params
    key = records.read_json(tmp_path / "eval" / "scores.json")["key"]
    assert key["code"] == records.code_fingerprint("translation_eval")["sha256"] and key["sacrebleu"]
    assert "translation/evaluate.py" in records.code_fingerprint("translation_eval")["files"]
    assert evaluate.read_cached(tmp_path / "eval", {**key, "code": "changed"}, ("scores",)) is None  # code changed: redo
    assert evaluate.read_cached(tmp_path / "eval", key, ("scores",), redo=True) is None
    assert evaluate.read_cached(tmp_path / "eval", key, ("scores",))[0].equals(scores)
