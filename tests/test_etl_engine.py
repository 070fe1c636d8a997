"""The sharded ETL on datatrove's local executor: N tasks give what 1 task gives, the merge
checks every shard, a bad shard fails only its task, changed inputs are caught on resume, and
the trainer streams the shards with exact (seed, step) -> examples."""

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mt5study import batches
from mt5study.config import DataConfig, RunConfig, apply_overrides, validate
from mt5study.data import etl
from mt5study.data.engine import completed_ranks, write_manifest
from mt5study.data.output import ETLError
from mt5study.data.plan import InputsChangedError
from mt5study.data.sampling import share_tolerance
from mt5study.data.samples import make_documents
from mt5study.data.shards import Layout, ShardHashError, ShardMissingError, write_examples
from mt5study.data.stream import apportion

SIZES = {"en": 48, "de": 24, "fr": 9}  # documents per language, spread over FILES files each
FILES = 3


def write_corpus(folder: Path) -> Path:
    """<lang>/part-k.jsonl; every file after the first repeats the language's first document,
    so exact duplicates sit in different shards (and tasks)."""
    for lang, n in SIZES.items():
        docs = make_documents(lang, n, seed=0)
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for k in range(FILES):
            part = docs[k::FILES] + ([docs[0]] if k else [])
            (folder / lang / f"part-{k}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in part))
    return folder


def make_params(corpus: Path, tasks: int, **overrides):
    doc = {"etl": {
        "seed": 3, "source": {"kind": "files", "files": {"path": str(corpus)}},
        "cleaning": {"min_chars": 100}, "tokenizer": {"vocab_size": 500, "sample_chars": 60_000},
        "corruption": {"inputs_length": 32}, "output": {"validation_fraction": 0.1},
        "engine": {"executor": "local", "tasks": tasks, "workers": 1, "dedup_buckets": 4, "mix_block": 512},
    }}
    return validate(apply_overrides(doc, overrides, "test"), "test")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    corpus = write_corpus(root / "corpus")
    one = etl.run(make_params(corpus, 1), root / "one")
    four = etl.run(make_params(corpus, 4), root / "four")
    return root, corpus, one, four


def test_four_tasks_keep_the_documents_counts_and_examples_of_one(runs):
    root, _, one, four = runs
    assert one["counts"] == four["counts"]
    assert one["content_sha256"] == four["content_sha256"]
    key = lambda m: sorted((s["id"], s["train"]["sha256"], s["validation"]["sha256"]) for s in m["shards"])  # noqa: E731
    assert key(one) == key(four)  # examples ordered by the stable key (shard, split, row) are equal
    assert one["probabilities"] == four["probabilities"] and one["num_examples"] == four["num_examples"]
    assert [t["shards"] for t in four["per_task"]] == [3, 2, 2, 2]  # 9 shards round-robin over 4 tasks
    for key_ in ("read_docs", "kept_docs", "examples", "tokens"):
        assert sum(t[key_] for t in four["per_task"]) == one["per_task"][0][key_]
    for lang, n in SIZES.items():
        c = four["counts"][lang]
        assert c["read"]["docs"] == n + FILES - 1
        assert c["duplicate"]["docs"] >= FILES - 1  # the repeated first document, found across shards
        assert c["kept"]["docs"] == c["documents"]["train"] + c["documents"]["validation"]
    assert completed_ranks(root / "four", "clean") == {0, 1, 2, 3}


def test_manifest_names_every_shard_with_its_hash(runs):
    root, _, _, four = runs
    assert len(four["shards"]) == len(SIZES) * FILES
    for s in four["shards"]:
        for split in ("train", "validation"):
            assert (root / "four" / s[split]["path"]).is_file() and len(s[split]["sha256"]) == 64


def test_merge_refuses_a_missing_or_changed_shard(runs, tmp_path):
    root, _, _, four = runs
    out = tmp_path / "copy"
    shutil.copytree(root / "four", out)
    (out / "manifest.json").unlink()
    cfg = make_params(Path("."), 4).etl
    victim = out / four["shards"][1]["train"]["path"]
    x = np.zeros((3, 32), np.int32)
    write_examples(victim, x, np.zeros((3, four["targets_length"]), np.int32))
    with pytest.raises(ShardHashError, match=four["shards"][1]["id"]):
        write_manifest(cfg, out)
    victim.unlink()
    with pytest.raises(ShardMissingError, match=four["shards"][1]["id"]):
        write_manifest(cfg, out)
    assert not (out / "manifest.json").exists()


def test_unreadable_shard_fails_its_task_only_and_changed_inputs_are_caught(tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    (corpus / "de" / "part-1.jsonl").unlink()
    bad = corpus / "de" / "part-1.jsonl.gz"  # shard de-00001: a truncated gzip
    bad.write_bytes(gzip.compress(b'{"text": "x"}\n' * 50)[:40])
    params = make_params(corpus, 4, **{"etl.source.on_bad_record": "error"})
    with pytest.raises(ETLError, match=r"stage clean: 1 of 4 tasks failed.*ShardReadError.*de-00001"):
        etl.run(params, tmp_path / "out")
    shards = json.loads((tmp_path / "out" / "_engine" / "plan.json").read_text())["shards"]
    failing = next(k for k, s in enumerate(shards) if s["id"] == "de-00001") % 4
    assert completed_ranks(tmp_path / "out", "clean") == {0, 1, 2, 3} - {failing}  # the others went on
    bad.write_bytes(gzip.compress(b'{"text": "fixed"}\n'))  # the input changes before the resume
    with pytest.raises(InputsChangedError, match="part-1.jsonl.gz: changed"):
        etl.run(params, tmp_path / "out")


def test_trainer_streams_the_shards_with_exact_resume(runs):
    root, _, _, four = runs
    data = DataConfig(path=str(root / "four"), input_length=32, target_length=four["targets_length"])
    splits = batches.load_splits(data, seed=5)
    train = splits["train"]
    assert splits["vocab_size"] == 500 and len(train) == four["num_examples"]["train"]
    run = RunConfig(steps=12, micro_batch=4, grad_accum=2)
    whole = batches.MicroBatches(train, run, 0, 1, 0, 5)
    resumed = batches.MicroBatches(train, run, 0, 1, 4, 5)  # restarted at step 4
    for k in range(4):
        assert torch.equal(whole[8 + k]["input_ids"], resumed[k]["input_ids"])
    again = batches.load_splits(data, seed=5)["train"]
    assert np.array_equal(again[np.arange(40)]["input_ids"], train[np.arange(40)]["input_ids"])
    # a DataLoader worker process (loading off the step's path) reads the same batches
    loader = torch.utils.data.DataLoader(whole, batch_size=None, num_workers=1)
    for k, got in zip(range(3), loader):
        assert torch.equal(got["labels"], whole[k]["labels"])
    # the mixture: each block holds the apportioned share of every language
    n = 4 * 512
    langs = train[np.arange(n)]["lang"]
    for lang, p in four["split_probabilities"]["train"].items():
        share = langs.count(lang) / n
        assert abs(share - p / sum(four["split_probabilities"]["train"].values())) <= share_tolerance(p, n)
    assert apportion({"a": 0.5, "b": 0.3, "c": 0.2}, 7) == {"a": 4, "b": 2, "c": 1}


def test_stream_reads_only_memory_mapped_shards(runs):
    root, _, _, four = runs
    split = batches.load_splits(DataConfig(path=str(root / "four"), input_length=32,
                                           target_length=four["targets_length"]), seed=0)["train"]
    split[np.arange(16)]
    opened = split._tables  # noqa: SLF001 (opened lazily: only the shards that were read)
    assert 0 < len(opened) <= len(four["shards"])
    for _, inputs, labels in opened.values():
        for view in inputs + labels:  # zero-copy views into the memory-mapped files, no copies
            assert not view.flags.owndata and not view.flags.writeable
    assert Layout(root / "four").shard("train", "en-00000").stat().st_size > 0


def test_mc4_projection_arithmetic():
    from mt5study.data.report import MC4_TOKENS, mc4_projection

    t = mc4_projection(1e5, 0.5, nodes=(1, 10), tasks_per_node=10, clean_bytes_per_token=2.0)
    assert t.loc[1, "hours"] == pytest.approx(MC4_TOKENS / (1e5 * 10 * 0.5) / 3600)
    assert t.loc[10, "hours"] == pytest.approx(t.loc[1, "hours"] / 10)
    # mT5 lengths: 1137 raw tokens -> 1024 + 229 int32 ids per example
    assert t.loc[1, "examples_TB"] == pytest.approx(MC4_TOKENS / 1137 * 1253 * 4 / 1e12)
    assert t.loc[1, "clean_text_TB"] == pytest.approx(MC4_TOKENS * 2.0 / 1e12)
