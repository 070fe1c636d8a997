"""Cleaning filters: what each one drops, counted in documents and characters."""

import datasets
import pytest

from mt5study.data.clean import FILTERS, clean_documents, langid_codes, normalize, remove_control_chars
from mt5study.data.config import CleaningConfig
from mt5study.data.samples import make_documents


def _clean(docs, lang="en", **cfg):
    import tempfile
    from pathlib import Path

    work = Path(tempfile.mkdtemp())
    stats = clean_documents(((f"d{i}", t) for i, t in enumerate(docs)), lang, CleaningConfig(**cfg), work / "out.arrow", work)
    kept = datasets.Dataset.from_file(str(work / "out.arrow"))["text"] if stats["kept"]["docs"] else []
    return stats, list(kept)


def test_normalize_and_control_characters():
    assert normalize("ﬁne\r\n\r\n\r\n\r\nx  \n", "NFKC") == "fine\n\nx"  # ligature, CRLF, blank runs
    assert normalize("e\u0301", "NFC") == "\u00e9"
    assert normalize("ﬁ", "NFC") == "ﬁ" and normalize("ﬁ", "none") == "ﬁ"
    assert remove_control_chars("a\x00b\x1bc\td\ne\x85f\x7f") == "abc\td\nef"


def test_each_filter_counts_what_it_drops():
    en = make_documents("en", 30, seed=1)
    banner = "Cookie notice: this site uses cookies to improve your experience."
    docs = [f"{banner}\n{t}" for t in en[:20]] + en[20:]   # boilerplate line in 20 of 30 documents
    docs[0] = docs[0] + "\x07"                             # 1 control character
    docs[1] = docs[1] + " ﬁ"                               # NFKC: 1 character becomes 2
    docs.append("Too short.")                              # min_length
    docs.append(en[25])                                    # exact duplicate of a kept document
    german = make_documents("de", 1, seed=2)[0]
    docs.append(german)                                    # langid: German in an English source
    stats, kept = _clean(docs, "en", min_chars=100, boilerplate_min_docs=10, boilerplate_min_fraction=0.5)

    assert stats["read"] == {"docs": 33, "chars": sum(len(t) for t in docs)}
    assert stats["control_chars"] == {"docs": 0, "chars": 1, "changed_docs": 1}
    assert stats["normalize"]["chars"] == -1  # NFKC expanded one ligature to two letters
    assert stats["boilerplate"]["chars"] == 20 * (len(banner) + 1)  # the line and its newline
    assert stats["boilerplate_lines"] == 1
    assert stats["min_length"] == {"docs": 1, "chars": len("Too short.")}
    assert stats["duplicate"] == {"docs": 1, "chars": len(en[25])}
    assert stats["langid"]["docs"] == 1 and stats["langid_dropped_as"] == {"de": 1}
    assert stats["kept"]["docs"] == 30 == len(kept)
    assert all(banner not in t for t in kept)
    # Every character read is either kept or counted by exactly one filter.
    removed = sum(stats[f]["chars"] for f in FILTERS)
    assert stats["read"]["chars"] - removed == stats["kept"]["chars"] == sum(len(t) for t in kept)
    assert stats["read"]["docs"] - sum(stats[f]["docs"] for f in FILTERS) == stats["kept"]["docs"]


def test_filters_can_be_switched_off():
    en = make_documents("en", 5, seed=3)
    docs = en + [en[0]] + make_documents("de", 1)
    stats, kept = _clean(docs, "en", min_chars=0, deduplicate=False, langid=False)
    assert stats["kept"]["docs"] == 7 and stats["duplicate"]["docs"] == 0 and stats["langid"]["docs"] == 0


def test_boilerplate_needs_enough_documents():
    # A line in all 5 documents is not boilerplate when boilerplate_min_docs is 10.
    docs = [f"Shared line here.\n{t}" for t in make_documents("en", 5, seed=4)]
    stats, kept = _clean(docs, "en", min_chars=10)
    assert stats["boilerplate"]["chars"] == 0 and all(t.startswith("Shared line") for t in kept)


def test_langid_code_mapping():
    assert langid_codes("de") == {"de"}
    assert langid_codes("iw") == {"he"}            # mC4's Hebrew code
    assert langid_codes("fil") == {"tl"}           # mC4's Filipino code
    assert {"no", "nn"} <= langid_codes("nb")      # py3langid has no 'nb'
    assert "zh" in langid_codes("zh") and "zh" in langid_codes("zh_TW")
    assert langid_codes("ru-Latn") is None         # romanised: not checkable
    assert langid_codes("haw") is None             # outside py3langid's model: not checked
    assert langid_codes("nb", {"nb": ["da"]}) >= {"no", "da"}


@pytest.mark.parametrize("lang,text", [
    ("ja", "これは日本語の文章です。東京の天気は今日とても良いので、公園を散歩しました。"),
    ("zh", "这是一个中文句子。今天北京的天气很好，我们去公园散步了。"),
    ("ru", "Это предложение на русском языке. Сегодня хорошая погода, и мы гуляли в парке."),
])
def test_langid_keeps_cjk_and_cyrillic(lang, text):
    stats, kept = _clean([text * 3], lang, min_chars=10)
    assert stats["langid"]["docs"] == 0 and len(kept) == 1
