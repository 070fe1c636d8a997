"""Filters, splits by English string, temperature-balanced pairs and the manifest; a pair
without data or with an empty split is an error, never a silent empty split."""

from __future__ import annotations

from collections import Counter

import datasets
import pytest

from mt5study import records
from mt5study.translation import prepare
from mt5study.translation.config import TranslationConfig


class CharTokenizer:
    """One id per character (ids 3..258 by code point modulo 256): lengths are easy to reason about."""

    name, size = "chars", 300

    def encode(self, text: str) -> list[int]:
        return [3 + ord(c) % 256 for c in text]

    def fingerprint(self) -> str:
        return "chars"


def cfg(**kw) -> TranslationConfig:
    base = {"name": "t", "pairs": ["en-de", "de-en"], "sources": [{"kind": "files", "path": "x.tsv", "src_lang": "en",
                                                                   "tgt_lang": "de"}],
            "tokenizer": "tok", "input_length": 60, "target_length": 30,
            "finetune": {"params": "params/cpu/qa_finetune_smoke.yaml", "checkpoint": "ckpt"},
            "splits": {"validation_fraction": 0.2, "test_fraction": 0.2}}
    return TranslationConfig.model_validate({**base, **kw})


def rec(src, tgt, s, t, key=None):
    return {"src_lang": src, "tgt_lang": tgt, "source": s, "target": t, "key": key or (s if src == "en" else t),
            "origin": "test"}


def test_each_filter_counts_its_drops():
    c = cfg(filters={"min_chars": 2, "max_chars": 25, "max_token_ratio": 3.0})
    rs = [rec("en", "de", "Open", "Öffnen"), rec("en", "de", "Open", "Öffnen"),    # duplicate
          rec("en", "de", "  ", "x"),                                            # empty
          rec("en", "de", "%s", "%s"),                                            # no letters
          rec("en", "de", "A", "B"),                                              # too short
          rec("en", "de", "x" * 26, "yy"),                                        # too long (chars)
          rec("en", "de", "Save all", "Alle Dateien auf dem Datenträger"),         # too long (chars)
          rec("en", "de", "Go", "Gehe weiter"),                                   # ratio 11/2 > 3
          rec("en", "de", "Close  the\nwindow", "Fenster schließen")]              # whitespace collapsed
    counts: Counter = Counter()
    kept = prepare.filter_pair(rs, c, CharTokenizer(), counts)
    assert [(r["source"], r["target"]) for r in kept] == [("Open", "Öffnen"), ("Close the window", "Fenster schließen")]
    assert counts == {"read": 9, "duplicate": 1, "empty": 1, "no_letters": 1, "too_short": 1, "too_long_chars": 2,
                      "length_ratio": 1, "kept": 2}
    prefix = len("translate English to German: ")
    assert len(kept[0]["input_ids"]) == prefix + 4 + 1 and kept[0]["labels"][-1] == prepare.EOS_ID


def test_token_lengths_filter():
    c = cfg(input_length=40, target_length=8)
    counts: Counter = Counter()
    kept = prepare.filter_pair([rec("en", "de", "Open the file", "Datei öffnen"),
                                rec("en", "de", "Open it", "Öffnen Sie es")], c, CharTokenizer(), counts)
    assert counts["too_long_for_input"] == 1 and counts["too_long_for_target"] == 1 and not kept


def test_one_english_string_is_in_one_split_for_every_pair():
    c = cfg(pairs=["en-de", "de-en", "en-fr"])
    rs = []
    for i in range(300):
        en = f"Message number {i}"
        rs += [rec("en", "de", en, f"Meldung {i}"), rec("de", "en", f"Meldung {i}", en),
               rec("en", "fr", en, f"Message numéro {i}")]
    per_pair, counts = prepare.build_splits(rs, c, CharTokenizer())
    where: dict[str, set] = {}
    for pair, splits in per_pair.items():
        for split, items in splits.items():
            for r in items:
                where.setdefault(r["key"], set()).add(split)
    assert all(len(s) == 1 for s in where.values())
    for pair in c.pairs:
        n = {s: len(per_pair[pair][s]) for s in prepare.SPLITS}
        assert sum(n.values()) == 300 and 30 <= n["test"] <= 90 and 30 <= n["validation"] <= 90
        assert counts[pair]["test_examples"] == n["test"]


def test_held_out_keeps_one_target_per_source_and_caps():
    c = cfg(pairs=["en-de"], splits={"validation_fraction": 0.2, "test_fraction": 0.2, "max_test_per_pair": 5})
    rs = [rec("en", "de", f"Open {i}", f"Öffnen {i}") for i in range(200)]
    rs += [rec("en", "de", f"Open {i}", f"Aufmachen {i}") for i in range(200)]  # a second translation of each
    per_pair, counts = prepare.build_splits(rs, c, CharTokenizer())
    test = per_pair["en-de"]["test"]
    assert len(test) == 5 and len({r["source"] for r in test}) == 5
    assert counts["en-de"]["test_over_cap"] > 0 and counts["en-de"]["alternative_targets"] > 0
    train_sources = [r["source"] for r in per_pair["en-de"]["train"]]
    assert len(train_sources) > len(set(train_sources))  # training keeps every translation


def test_pair_without_data_or_empty_split_is_an_error():
    c = cfg(pairs=["en-de", "en-fr"])
    with pytest.raises(prepare.PairError, match="pair en-fr: no parallel data"):
        prepare.build_splits([rec("en", "de", f"Open {i}", f"Öffnen {i}") for i in range(50)] +
                             [rec("en", "de", "x", "y")], c, CharTokenizer())
    one = cfg(pairs=["en-de"])
    with pytest.raises(prepare.PairError, match=r"pair en-de: empty \[.*\] split"):
        prepare.build_splits([rec("en", "de", "Open", "Öffnen")], one, CharTokenizer())


def test_balanced_training_set_and_manifest(tmp_path):
    c = cfg(pairs=["en-de", "en-fr"], sampling={"alpha": 0.3})
    rs = [rec("en", "de", f"Open {i}", f"Öffnen {i}") for i in range(800)]
    rs += [rec("en", "fr", f"Open {i}", f"Ouvrir {i}") for i in range(100)]
    per_pair, counts = prepare.build_splits(rs, c, CharTokenizer())
    manifest = prepare.write(tmp_path / "d", per_pair, counts, [{"kind": "test"}], CharTokenizer(), c, 300, "fp")
    s = manifest["sampling"]
    n_de, n_fr = s["sizes"]["en-de"], s["sizes"]["en-fr"]
    want = n_fr**0.3 / (n_de**0.3 + n_fr**0.3)
    assert s["probabilities"]["en-fr"] == pytest.approx(want)
    assert abs(s["shares"]["en-fr"] - want) < 0.05 and s["shares"]["en-fr"] > n_fr / (n_de + n_fr) + 0.1
    assert s["examples"] >= n_de  # all_exhausted: the large pair is read once, the small one repeated
    ds = datasets.load_from_disk(str(tmp_path / "d" / "dataset"))
    assert len(ds["train"][0]["input_ids"]) == 60 and len(ds["train"][0]["labels"]) == 30
    assert len(ds["validation"]) == manifest["num_examples"]["validation"]
    m = records.read_json(tmp_path / "d" / "manifest.json")
    assert m["split_sizes"]["en-fr"]["test"] == len(per_pair["en-fr"]["test"])
    assert m["counts"]["en-de"]["kept"] == 800
    table = prepare.sizes(tmp_path / "d")
    assert list(table.index) == ["en-de", "en-fr"] and table.loc["en-fr", "train_share"] == round(s["shares"]["en-fr"], 3)
    tests = prepare.read_examples(tmp_path / "d", "test")
    assert {r["pair"] for r in tests} == {"en-de", "en-fr"}


def test_a_pair_left_empty_by_bad_or_missing_catalogs_says_why(tmp_path):
    """A language whose only catalog has a wrong charset, and one with no locale folder at all:
    PairError naming the pair, the counts and the bad file, never an empty split."""
    from test_translation_catalogs import write_mo

    from mt5study.translation import loaders

    lc = tmp_path / "fr" / "LC_MESSAGES"
    write_mo(lc / "app.mo", [(b"Open", "Ouvrir le fichier é".encode("utf-8"))], charset="ISO-8859-1")
    write_mo(tmp_path / "de" / "LC_MESSAGES" / "app.mo", [(b"Open", b"\xc3\x96ffnen")])
    source = {"kind": "catalogs", "locale_dirs": [str(tmp_path)], "domains": ["app", "typo"]}
    for pair, match in [("en-fr", r"pair en-fr: no parallel data .*catalogs: 0 records; fr: .*catalogs found 1, read 0, "
                                  r"bad charset 1, unreadable 0, domains missing 1.*app\.mo: declares charset iso-8859-1"),
                        ("en-nl", r"pair en-nl: no parallel data .*nl: locales none found, catalogs found 0")]:
        c = cfg(pairs=[pair], sources=[source])
        recs, reports = loaders.load(list(c.sources), [("en", "de"), tuple(pair.split("-"))])
        assert reports[0]["languages"]["de"]["domains_missing"] == 1  # "typo": counted in the manifest
        with pytest.raises(prepare.PairError, match=match):
            prepare.build_splits(recs, c, CharTokenizer(), reports)
