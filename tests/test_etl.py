"""The whole ETL on a tiny `files` corpus (and on the manual pages where installed)."""

import json
import os
import shutil
from pathlib import Path

import datasets
import numpy as np
import pytest
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from mt5study.config import apply_overrides, load, validate
from mt5study.data import etl, temperature_probs
from mt5study.data.config import ETLParams
from mt5study.data.etl import ETLError
from mt5study.data.sampling import empirical_shares, share_tolerance
from mt5study.data.samples import make_documents, write_jsonl_corpus
from mt5study.data.sources import SourceError
from mt5study.paths import PARAMS

SIZES = {"en": 120, "de": 40, "fr": 8}  # documents per language: unequal on purpose


def make_params(corpus: Path, **overrides) -> ETLParams:
    doc = {"etl": {
        "seed": 3, "num_proc": 1,
        "source": {"kind": "files", "files": {"path": str(corpus)}},
        "cleaning": {"min_chars": 100},
        "tokenizer": {"vocab_size": 700, "sample_chars": 150_000},
        "corruption": {"inputs_length": 32},
        "output": {"validation_fraction": 0.1},
    }}
    return validate(apply_overrides(doc, overrides, "test"), "test")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write_jsonl_corpus(folder, SIZES, seed=0)
    return folder


@pytest.fixture(scope="module")
def first_run(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "etl"
    params = make_params(corpus)
    manifest = etl.run(params, out)
    return out, manifest, params


def test_output_layout(first_run):
    out, manifest, _ = first_run
    assert sorted(p.name for p in out.iterdir()) == ["dataset", "documents.parquet", "manifest.json", "tokenizer"]
    assert json.loads((out / "manifest.json").read_text()) == json.loads(json.dumps(manifest))
    ds = datasets.load_from_disk(str(out / "dataset"))
    assert set(ds) == {"train", "validation"}
    for split in ("train", "validation"):
        d = ds[split]
        assert d.column_names == ["input_ids", "labels", "lang"]
        assert d.features["input_ids"].feature.dtype == "int32" and d.features["labels"].feature.dtype == "int32"
        t = d.with_format("numpy")
        assert np.stack(t["input_ids"]).shape == (len(d), 32)
        assert np.stack(t["labels"]).shape == (len(d), manifest["targets_length"])
        assert len(d) == manifest["num_examples"][split] > 0
    assert manifest["inputs_length"] == 32
    assert manifest["targets_length"] == 8  # 32 inputs: 34 raw tokens, 5 noise in 2 spans, + EOS
    assert manifest["raw_tokens_length"] == 34
    assert manifest["padded_examples"] == {"train": 0, "validation": 0}
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert isinstance(tok, PreTrainedTokenizerFast)
    assert manifest["vocab_size"] == len(tok) == 700
    for key in ("languages", "probabilities", "alpha", "seed", "inputs_length", "targets_length", "vocab_size",
                "content_sha256", "counts", "tokenizer", "source", "environment"):
        assert key in manifest
    assert manifest["languages"] == sorted(SIZES) and manifest["seed"] == 3 and manifest["alpha"] == 0.3


def test_counts_and_probabilities(first_run):
    _, manifest, _ = first_run
    kept = {}
    for lang, n in SIZES.items():
        c = manifest["counts"][lang]
        assert c["read"]["docs"] == n
        assert c["kept"]["docs"] == n - sum(c[f]["docs"] for f in ("min_length", "duplicate", "langid"))
        assert c["documents"]["train"] + c["documents"]["validation"] == c["kept"]["docs"]
        assert c["documents"]["validation"] >= 1
        kept[lang] = c["kept"]["docs"]
    weights = {k: v**0.3 for k, v in kept.items()}  # p ∝ n^0.3, computed here independently
    total = sum(weights.values())
    assert manifest["probabilities"] == pytest.approx({k: w / total for k, w in weights.items()})
    assert manifest["probabilities"] == pytest.approx(temperature_probs(kept, 0.3))


def test_sampled_shares_match_probabilities(first_run):
    out, manifest, _ = first_run
    train = datasets.load_from_disk(str(out / "dataset"))["train"]
    shares = empirical_shares(train["lang"], manifest["languages"])
    for lang, p in manifest["split_probabilities"]["train"].items():
        assert abs(shares[lang] - p) <= share_tolerance(p, len(train)), (lang, shares[lang], p)


def test_examples_rebuild_source_documents(first_run):
    """Undo the corruption: each run of tokens between EOS decodes to a piece of one source
    document of the example's language (chunks of 34 tokens are shorter than documents)."""
    out, manifest, _ = first_run
    train = datasets.load_from_disk(str(out / "dataset"))["train"]
    tok = AutoTokenizer.from_pretrained(out / "tokenizer")
    sentinels = set(range(manifest["vocab_size"] - 100, manifest["vocab_size"]))
    sources = {lang: [" ".join(t.split()) for t in make_documents(lang, n, seed=0)] for lang, n in SIZES.items()}
    checked = 0
    for ex in train.select(range(0, len(train), max(1, len(train) // 40))):
        spans, current = {}, None
        for t in ex["labels"][:-1]:
            if t in sentinels:
                current = t
                spans[t] = []
            else:
                spans[current].append(t)
        raw = []
        for t in ex["input_ids"][:-1]:
            raw.extend(spans[t] if t in sentinels else [t])
        assert len(raw) == manifest["raw_tokens_length"]
        pieces = np.split(np.array(raw), np.flatnonzero(np.array(raw) == 1))
        for piece in pieces:
            text = " ".join(tok.decode(piece[piece != 1]).split())
            if len(text) > 3:
                assert any(text in doc for doc in sources[ex["lang"]]), (ex["lang"], text)
                checked += 1
    assert checked > 0


def test_deterministic_overwrite_and_num_proc(first_run, corpus):
    out, manifest, params = first_run
    with pytest.raises(ETLError, match="already holds a completed ETL output"):
        etl.run(params, out)
    again = etl.run(params, out, overwrite=True)
    assert again["content_sha256"] == manifest["content_sha256"]
    assert again["tokenizer"]["sha256"] == manifest["tokenizer"]["sha256"]
    # Two workers, same tokenizer: the examples do not depend on num_proc.
    shutil.copytree(out / "tokenizer", out.parent / "tok")
    two = make_params(corpus, **{"etl.num_proc": 2, "etl.tokenizer.pretrained": str(out.parent / "tok")})
    parallel = etl.run(two, out.parent / "parallel")
    assert parallel["content_sha256"] == manifest["content_sha256"]


def test_interrupted_run_leaves_nothing_that_looks_complete(corpus, tmp_path, monkeypatch):
    out = tmp_path / "etl"
    stale = tmp_path / ".etl.tmp-999999999-deadbeef"  # a killed run's folder (no such pid)
    stale.mkdir()

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(etl, "mix", boom)
    with pytest.raises(KeyboardInterrupt):
        etl.run(make_params(corpus), out)
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # neither this run's temporary folder nor the stale one


def test_language_emptied_is_an_error_or_a_warned_drop(tmp_path):
    write_jsonl_corpus(tmp_path / "c", {"en": 60, "de": 30})
    (tmp_path / "c" / "fr.jsonl").write_text("".join(json.dumps({"text": f"Bonjour {i}."}) + "\n" for i in range(5)))
    with pytest.raises(ETLError, match=r"language fr: no documents left after cleaning \(read 5; dropped by min_length 5\)"):
        etl.run(make_params(tmp_path / "c"), tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.warns(UserWarning, match="language fr: no documents left"):
        manifest = etl.run(make_params(tmp_path / "c", **{"etl.cleaning.on_empty_language": "drop"}), tmp_path / "out")
    assert manifest["languages"] == ["de", "en"] and "fr" in manifest["dropped_languages"]
    assert manifest["counts"]["fr"]["min_length"]["docs"] == 5


def test_empty_language_file_is_named(tmp_path):
    write_jsonl_corpus(tmp_path / "c", {"en": 30})
    (tmp_path / "c" / "de.jsonl").write_text("\n\n")
    with pytest.raises(ETLError, match=r"language de: the source has no documents in de\.jsonl"):
        etl.run(make_params(tmp_path / "c"), tmp_path / "out")


def test_special_token_strings_in_documents_stay_text(first_run, tmp_path):
    """A document quoting </s>, <pad> or <extra_id_5> gives ordinary tokens: one EOS, at its end."""
    out, manifest, _ = first_run
    texts = ["Markup </s> and <pad> and <extra_id_5> inside.", "A plain sentence.", "<extra_id_0></s><pad>"]
    docs = datasets.Dataset.from_dict({"id": ["a", "b", "c"], "lang": ["en"] * 3, "text": texts})
    tokens = etl.tokenize(docs, etl.Encoder(str(out / "tokenizer")), 1, tmp_path / "t.arrow")
    specials = {0, 2, *range(manifest["vocab_size"] - 100, manifest["vocab_size"])}
    for ids in tokens["ids"]:
        assert ids[-1] == 1 and 1 not in ids[:-1] and not specials & set(ids)
    plain = etl.Encoder(str(out / "tokenizer")).encode(["A plain sentence."])[0]
    assert tokens["ids"][1] == plain + [1]


def test_bad_input_stops_before_any_output(tmp_path):
    write_jsonl_corpus(tmp_path / "c", {"en": 20})
    with open(tmp_path / "c" / "en.jsonl.gz", "ab") as f:
        f.write(b"\x00garbage")  # a second, broken gzip member
    (tmp_path / "c" / "de.jsonl").write_bytes(b'{"text": "Ein Satz."}\n{"text": oops}\n')
    with pytest.raises(SourceError, match=r"de\.jsonl:2: malformed JSON"):
        etl.run(make_params(tmp_path / "c", **{"etl.source.on_bad_record": "error"}), tmp_path / "out")
    with pytest.raises(SourceError, match="does not exist"):
        etl.run(make_params(tmp_path / "missing"), tmp_path / "out")
    assert sorted(os.listdir(tmp_path)) == ["c"]


def test_existing_non_etl_folder_is_refused(corpus, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "precious.txt").write_text("keep me")
    for overwrite in (False, True):
        with pytest.raises(ETLError, match="not an empty folder or an ETL output"):
            etl.run(make_params(corpus), tmp_path / "out", overwrite=overwrite)
    assert (tmp_path / "out" / "precious.txt").read_text() == "keep me"


def test_mc4_source_end_to_end_on_local_files(tmp_path):
    write_jsonl_corpus(tmp_path / "mc4", {"de": 40, "fr": 25}, mc4_schema=True)
    params = make_params(tmp_path / "unused", **{
        "etl.source.kind": "mc4", "etl.source.files": None, "etl.source.languages": ["de", "fr"],
        "etl.source.mc4": {"dataset": "json", "config": None,
                           "data_files": str(tmp_path / "mc4" / "c4-{lang}.tfrecord-*.json.gz")},
    })
    manifest = etl.run(params, tmp_path / "out")
    assert manifest["languages"] == ["de", "fr"] and manifest["source"]["kind"] == "mc4"
    assert manifest["counts"]["de"]["read"]["docs"] == 40 and manifest["num_examples"]["train"] > 0


def _manpages_installed() -> bool:
    from mt5study.data.config import ManpagesSource
    from mt5study.data.sources import ManpagesReader

    return shutil.which("groff") is not None and bool(ManpagesReader(ManpagesSource())._dpkg_packages())


@pytest.mark.skipif(not _manpages_installed(), reason="manual pages not installed (scripts/install_manpages.sh)")
def test_smoke_etl_on_manual_pages(tmp_path):
    params = load(PARAMS / "cpu" / "etl_smoke.yaml")
    manifest = etl.run(params, tmp_path / "etl")
    assert set(manifest["languages"]) <= set(params.etl.source.languages) and len(manifest["languages"]) >= 4
    assert manifest["source"]["kind"] == "manpages" and "manpages" in manifest["source"]["packages"]
    ds = datasets.load_from_disk(str(tmp_path / "etl" / "dataset"))
    assert len(ds["train"]) == params.etl.output.max_train_examples
    assert set(ds["train"]["lang"]) == set(manifest["languages"])
