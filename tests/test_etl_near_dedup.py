"""MinHash near-duplicate removal in the sharded ETL (engine.near_dedup, datatrove's MinHash
steps): a document that differs from another by a few words is dropped with the option on and
kept with it off, counted per language; 1 task and 2 tasks keep the same documents."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from mt5study.config import ConfigError, apply_overrides, validate
from mt5study.data import etl
from mt5study.data.engine import active_stages
from mt5study.data.samples import make_documents
from mt5study.data.stages import STAGES

DOCS = 8  # distinct documents per language, over 2 files (2 shards)
WORDS = 120  # words per document


def random_documents(lang: str, seed: int) -> list[str]:
    """Documents of words drawn at random from the language's sample vocabulary: any two share
    almost no 5-word shingles, so only the planted copy is a near-duplicate."""
    vocab = sorted({w for t in make_documents(lang, 20, seed=0) for w in re.findall(r"\w+", t.lower())})
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(DOCS):
        words = rng.choice(vocab, WORDS).tolist()
        docs.append(". ".join(" ".join(words[i:i + 12]).capitalize() for i in range(0, WORDS, 12)) + ".")
    return docs


def near_copy(text: str) -> str:
    """The text with 3 of its words (about 2.5 %) replaced."""
    words = text.split(" ")
    for i in (20, 60, 100):
        words[i] = "zzzq"
    return " ".join(words)


def write_corpus(folder: Path) -> Path:
    """<lang>/part-{0,1}.jsonl; part-1 of en also holds a near copy of en's first document."""
    for k, lang in enumerate(("en", "de")):
        docs = random_documents(lang, seed=k)
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for part in range(2):
            rows = docs[part::2] + ([near_copy(docs[0])] if lang == "en" and part == 1 else [])
            (folder / lang / f"part-{part}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    return folder


def make_params(corpus: Path, tasks: int, near: bool, **overrides):
    doc = {"etl": {
        "seed": 3, "source": {"kind": "files", "files": {"path": str(corpus)}},
        "cleaning": {"min_chars": 100, "langid": False}, "tokenizer": {"vocab_size": 500, "sample_chars": 20_000},
        "corruption": {"inputs_length": 32}, "output": {"validation_fraction": 0.1},
        "engine": {"executor": "local", "tasks": tasks, "workers": 1, "dedup_buckets": 2, "mix_block": 256,
                   "near_dedup": {"enabled": near, "n_grams": 5, "buckets": 4, "hashes_per_bucket": 4}},
    }}
    return validate(apply_overrides(doc, overrides, "test"), "test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("near")
    corpus = write_corpus(root / "corpus")
    return {name: etl.run(make_params(corpus, tasks, near), root / name)
            for name, tasks, near in (("off", 1, False), ("on1", 1, True), ("on2", 2, True))}


def test_the_near_copy_is_dropped_with_the_option_on_and_kept_with_it_off(runs):
    off, on = runs["off"]["counts"], runs["on1"]["counts"]
    assert off["en"]["kept"]["docs"] == DOCS + 1 and off["de"]["kept"]["docs"] == DOCS
    assert on["en"]["kept"]["docs"] == DOCS and on["de"]["kept"]["docs"] == DOCS
    assert on["en"]["near_duplicate"]["docs"] == 1 and on["de"]["near_duplicate"]["docs"] == 0
    assert on["en"]["near_duplicate"]["chars"] > 0
    assert "near_duplicate" not in off["en"]  # the default run's counts are today's
    assert runs["on1"]["engine"]["near_dedup"]["buckets"] == 4 and "near_dedup" not in runs["off"]["engine"]
    assert on["en"]["duplicate"] == off["en"]["duplicate"]  # exact duplicates are counted apart


def test_one_and_two_tasks_keep_the_same_documents(runs):
    one, two = runs["on1"], runs["on2"]
    assert one["counts"] == two["counts"]
    assert one["content_sha256"] == two["content_sha256"]


def test_the_stages_are_only_added_when_enabled(tmp_path):
    corpus = tmp_path / "c"
    assert active_stages(make_params(corpus, 1, False).etl) == STAGES
    stages = active_stages(make_params(corpus, 1, True).etl)
    assert stages[stages.index("dedup") + 1:stages.index("tokenizer")] == (
        "minhash_signature", "minhash_buckets", "minhash_cluster", "minhash_filter")


@pytest.mark.parametrize("key,value", [("buckets", 0), ("n_grams", -1), ("hashes_per_bucket", "many")])
def test_bad_knobs_name_the_key_and_value(tmp_path, key, value):
    with pytest.raises(ConfigError) as err:
        make_params(tmp_path, 1, True, **{f"etl.engine.near_dedup.{key}": value})
    assert f"near_dedup.{key}" in str(err.value) and str(value) in str(err.value)


def test_the_inline_executor_refuses_the_option(tmp_path):
    with pytest.raises(ConfigError, match="near_dedup.enabled=True needs executor local or slurm"):
        make_params(tmp_path, 1, True, **{"etl.engine.executor": "inline"})


def test_slurm_chains_the_same_stage_objects(tmp_path):
    """The Slurm path builds one job array per stage, the MinHash ones included (not submitted)."""
    from mt5study.data.engine import STAGE_CLASSES, slurm_executors

    cfg = make_params(tmp_path, 3, True, **{"etl.engine.executor": "slurm"}).etl
    executors = slurm_executors(cfg, tmp_path / "out")
    assert [type(ex.pipeline[0]) for ex in executors] == [STAGE_CLASSES[s] for s in active_stages(cfg)]
    assert [ex.world_size for ex in executors] == [3, 2, 3, 4, 1, 3, 1, 3, 1]
    assert all(ex.depends is prev for prev, ex in zip(executors, executors[1:]))
