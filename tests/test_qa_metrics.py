"""squad_scores against hand-checked cases of the official SQuAD v1.1 and MLQA rules."""

from __future__ import annotations

import pytest

from mt5study.qa import squad_scores
from mt5study.qa.metrics import f1, normalize, normalize_tokens, rules


def one(pred: str, refs: list[str], lang: str | None = None) -> tuple[float, float]:
    s = squad_scores([pred], [refs], lang=lang)
    return s["exact_match"], s["f1"]


# --- SQuAD v1.1 (lang=None) -------------------------------------------------------------------

@pytest.mark.parametrize("pred, ref", [
    ("The Cat!", "cat"),                 # case, ASCII punctuation, article
    ("  a  big   dog ", "big dog"),      # whitespace and article
    ("U.S. Army", "US army"),            # punctuation inside words is deleted, not split on
    ("an apple", "apple"),
])
def test_squad_normalisation_makes_these_equal(pred, ref):
    assert one(pred, [ref]) == (100.0, 100.0)


def test_articles_only_as_whole_words():
    assert normalize("Banana theatre an") == "banana theatre"


def test_token_f1_by_hand():
    # pred [big, red, dog] vs ref [red, dog]: 2 shared, P 2/3, R 1 -> F1 0.8
    assert one("the big red dog", ["a red dog"]) == (0.0, pytest.approx(80.0))
    # multiset overlap: [dog, dog, dog] vs [dog] shares 1 -> P 1/3, R 1 -> F1 0.5
    assert one("dog dog dog", ["dog"]) == (0.0, pytest.approx(50.0))


def test_best_reference_counts():
    # "dog" vs "cat": 0; vs "big dog": P 1, R 1/2 -> 2/3
    assert one("dog", ["cat", "big dog"]) == (0.0, pytest.approx(200 / 3))
    assert one("dog", ["cat", "the dog"]) == (100.0, 100.0)


def test_empty_after_normalisation_is_v11_rule():
    # v1.1: exact match compares "" == "" (1) but F1 has no shared token (0)
    assert one("the", ["a"]) == (100.0, 0.0)
    assert one("", ["x"]) == (0.0, 0.0)


def test_totals_are_percent_means():
    s = squad_scores(["cat", "x", "big dog"], [["cat"], ["y"], ["dog"]])
    assert s["exact_match"] == pytest.approx(100 / 3)
    assert s["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3 * 100)


def test_squad_keeps_non_ascii_punctuation():
    assert normalize("«café»") == "«café»"
    assert one("«café»", ["café"]) == (0.0, 0.0)


# --- MLQA (lang given) ------------------------------------------------------------------------

@pytest.mark.parametrize("lang, pred, ref", [
    ("de", "Der Hund", "hund"),
    ("de", "einem Haus", "Haus"),
    ("es", "los gatos", "gatos"),
    ("en", "the cat", "cat"),
    ("vi", "những con mèo", "con mèo"),
    ("ar", "الكتاب", "كتاب"),            # MLQA's Arabic pattern drops the article "ال"
    ("zh", "“你好”", "你好"),            # Unicode punctuation
    ("fr", "«café»", "café"),            # Unicode punctuation for every language
])
def test_mlqa_normalisation_makes_these_equal(lang, pred, ref):
    assert one(pred, [ref], lang) == (100.0, 100.0)


def test_articles_are_language_specific():
    assert one("Der Hund", ["hund"], None)[0] == 0.0  # SQuAD does not know German articles
    assert one("the cat", ["cat"], "de")[0] == 0.0     # nor MLQA's German English ones
    assert normalize("le chat", "fr") == "le chat"     # no article list outside MLQA's


def test_chinese_character_tokens():
    # [北 京 大 学] vs [北 京]: P 1/2, R 1 -> F1 2/3; SQuAD sees one token each -> 0
    assert one("北京大学", ["北京"], "zh") == (0.0, pytest.approx(200 / 3))
    assert one("北京大学", ["北京"], None) == (0.0, 0.0)
    # runs of other characters stay whitespace tokens, lower-cased
    assert normalize_tokens("iPhone手机 pro", "zh") == ["iphone", "手", "机", "pro"]


def test_japanese_extension_character_tokens():
    # 6 katakana vs the same + を: P 1, R 6/7 -> F1 12/13
    assert f1("ディレクトリ", "ディレクトリを", "ja") == pytest.approx(12 / 13)
    assert rules("ja") == "mlqa-extension" and rules("zh") == "mlqa" and rules(None) == "squad"


def test_language_codes_reduce_to_their_base():
    assert rules("zh-Hans") == "mlqa" and rules("pt_BR") == "mlqa-extension"
    assert one("Der Hund", ["hund"], "de-AT")[0] == 100.0


def test_bad_arguments():
    with pytest.raises(ValueError, match="predictions"):
        squad_scores(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError, match="list of answers"):
        squad_scores(["a"], ["a"])
    with pytest.raises(ValueError, match="list of answers"):
        squad_scores(["a"], [[]])


def test_agrees_with_torchmetrics_where_installed():
    """torchmetrics' SQuAD follows v1.1 except for empty answers (it uses v2.0's rule)."""
    tm = pytest.importorskip("torchmetrics.functional.text")
    cases = [("The Cat!", ["cat"]), ("the big red dog", ["a red dog", "dog"]), ("dog dog dog", ["dog"]),
             ("U.S. army", ["US Army", "the army"]), ("Über café»", ["über café"]), ("", ["x"])]
    for pred, refs in cases:
        theirs = tm.squad([{"prediction_text": pred, "id": "q"}],
                          [{"answers": {"answer_start": [0] * len(refs), "text": refs}, "id": "q"}])
        ours = squad_scores([pred], [refs])
        assert float(theirs["exact_match"]) == pytest.approx(ours["exact_match"])
        assert float(theirs["f1"]) == pytest.approx(ours["f1"])
