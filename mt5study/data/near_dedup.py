"""MinHash near-duplicate removal for the sharded ETL (`engine.near_dedup.enabled`), on
datatrove's own MinHash steps, run as four extra stages between the exact dedup and the tokenizer:

  minhash_signature  per shard (engine.tasks tasks): the shard's documents left after the exact
                     dedup, in row order, through MinhashDedupSignature; the signature files are
                     named by the shard's index in the plan (not the task), so which document of
                     a near-duplicate pair is kept does not depend on the number of tasks
  minhash_buckets    one task per LSH bucket: MinhashDedupBuckets writes the matching pairs
  minhash_cluster    one task: MinhashDedupCluster joins pairs into clusters and lists, per shard
                     index, the documents to drop (all but one per cluster)
  minhash_filter     per shard: the same document stream through MinhashDedupFilter; the rows it
                     drops go to near_dedup/removed/<shard>.json, which stages.duplicates() adds
                     to the exact duplicates for the tokenizer, encode and merge stages

The stage objects are the same on the local executor and on Slurm (mt5study.data.engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

from datatrove.data import Document
from datatrove.utils.word_tokenizers import WordTokenizer

from mt5study.data.clean import read_docs
from mt5study.data.config import ETLConfig
from mt5study.data.plan import task_shards
from mt5study.data.shards import Layout, write_json
from mt5study.data.stages import Stage, exact_duplicates

NEAR_STAGES = ("minhash_signature", "minhash_buckets", "minhash_cluster", "minhash_filter")
NO_SPACE_LANGUAGES = frozenset({"ja", "zh", "th", "lo", "km", "my", "bo"})  # words are not space-separated


class SimpleWordTokenizer(WordTokenizer):
    """Words for the shingles: whitespace-separated tokens of datatrove's simplified text
    (lowercased, punctuation removed), or single characters in languages written without
    spaces. datatrove's own per-language tokenizers need nltk/spaCy, which this project does
    not install."""

    def word_tokenize(self, text: str) -> list[str]:
        if self.language in NO_SPACE_LANGUAGES:
            return [c for c in text if not c.isspace()]
        return text.split()

    def sent_tokenize(self, text: str) -> list[str]:
        return text.splitlines()

    def span_tokenize(self, text: str) -> list[tuple[int, int]]:
        raise NotImplementedError("not used by the MinHash steps")


def minhash_config(cfg: ETLConfig):
    """datatrove's MinhashConfig from engine.near_dedup; shingles hashed with SHA-1 (64 bits):
    datatrove 0.10.1's xxhash path passes str, which the installed xxhash refuses."""
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.utils.hashing import HashConfig

    nd = cfg.engine.near_dedup
    return MinhashConfig(n_grams=nd.n_grams, num_buckets=nd.buckets, hashes_per_bucket=nd.hashes_per_bucket,
                         seed=nd.seed, hash_config=HashConfig(precision=64, hash_fc="sha1"))


def folders(layout: Layout) -> dict[str, Path]:
    base = layout.engine / "near_dedup"
    return {"signatures": base / "signatures", "buckets": base / "buckets", "remove": base / "remove"}


def shard_stream(layout: Layout, shard_id: str, exact: dict[str, dict[str, Any]]) -> Iterator[Document]:
    """The shard's cleaned documents without its exact duplicates (`exact`: stages.exact_duplicates),
    in row order (the order both the signature and the filter step number them in); metadata
    row = the clean row."""
    drop = set(exact.get(shard_id, {"rows": []})["rows"])
    for row, (doc_id, _, text) in enumerate(read_docs(layout.clean(shard_id))):
        if row not in drop:
            yield Document(text=text, id=doc_id, metadata={"row": row})


class _PerShard(Stage):
    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return cfg.engine.tasks

    def indexed_shards(self, rank: int, world_size: int) -> list[tuple[int, dict[str, Any]]]:
        index = {s["id"]: k for k, s in enumerate(self.plan["shards"])}
        return [(index[s["id"]], s) for s in task_shards(self.plan, rank, world_size)]


class MinhashSignatureStage(_PerShard):
    name = "minhash_signature"

    def run_task(self, rank: int, world_size: int) -> None:
        from datatrove.pipeline.dedup.minhash import MinhashDedupSignature

        lay = self.layout
        exact = exact_duplicates(lay, self.cfg.engine.dedup_buckets)
        for k, shard in self.indexed_shards(rank, world_size):
            step = MinhashDedupSignature(output_folder=str(folders(lay)["signatures"]), config=minhash_config(self.cfg),
                                         language=SimpleWordTokenizer(shard["lang"]))
            step.run(shard_stream(lay, shard["id"], exact), rank=k, world_size=len(self.plan["shards"]))


class MinhashBucketsStage(Stage):
    name = "minhash_buckets"

    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return cfg.engine.near_dedup.buckets

    def run_task(self, rank: int, world_size: int) -> None:
        from datatrove.pipeline.dedup.minhash import MinhashDedupBuckets

        f = folders(self.layout)
        MinhashDedupBuckets(input_folder=str(f["signatures"]), output_folder=str(f["buckets"]),
                            config=minhash_config(self.cfg)).run(None, rank=rank, world_size=world_size)


class MinhashClusterStage(Stage):
    name = "minhash_cluster"

    def run_task(self, rank: int, world_size: int) -> None:
        from datatrove.pipeline.dedup.minhash import MinhashDedupCluster

        f = folders(self.layout)
        f["remove"].mkdir(parents=True, exist_ok=True)
        MinhashDedupCluster(input_folder=str(f["buckets"]), output_folder=str(f["remove"]),
                            config=minhash_config(self.cfg)).run(None, 0, world_size=1)


class MinhashFilterStage(_PerShard):
    name = "minhash_filter"

    def run_task(self, rank: int, world_size: int) -> None:
        from datatrove.pipeline.dedup.minhash import MinhashDedupFilter

        lay = self.layout
        exact = exact_duplicates(lay, self.cfg.engine.dedup_buckets)
        for k, shard in self.indexed_shards(rank, world_size):
            out = lay.near_removed(shard["id"])
            if out.exists():
                continue
            docs = list(shard_stream(lay, shard["id"], exact))
            step = MinhashDedupFilter(input_folder=str(folders(lay)["remove"]))
            kept = {d.metadata["row"] for d in step.run(iter(docs), rank=k, world_size=len(self.plan["shards"]))}
            gone = [d for d in docs if d.metadata["row"] not in kept]
            self.stat_update("near_duplicates", value=len(gone))
            write_json(out, {"rows": [d.metadata["row"] for d in gone], "chars": sum(len(d.text) for d in gone)})


NEAR_STAGE_CLASSES = {c.name: c for c in (MinhashSignatureStage, MinhashBucketsStage, MinhashClusterStage,
                                          MinhashFilterStage)}
