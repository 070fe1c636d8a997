"""Files of a sharded ETL run: where each stage writes, example shards as Arrow IPC files, their
content hashes, and the checks the merge makes before it writes a manifest.

Layout of OUT (the manifest is written last and marks a complete output):
    OUT/_engine/plan.json              shards and their input files (mt5study.data.plan)
    OUT/_engine/logs/<stage>/          datatrove logging folders (completions/, stats/, logs/)
    OUT/_engine/clean/<shard>.arrow    cleaned documents; <shard>.json its counts (written last)
    OUT/_engine/sig/<shard>.npy        document hashes sorted by dedup bucket
    OUT/_engine/dups/<bucket>.json     rows found duplicate, per shard
    OUT/_engine/encode/<shard>.json    tokens, examples and shard hashes (written last)
    OUT/tokenizer/                     HF T5 tokenizer
    OUT/shards/<split>/<shard>.arrow   examples: input_ids, labels (fixed-size int32 lists)
    OUT/manifest.json
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from mt5study.data.output import SPLITS, ETLError

ENGINE = "_engine"

# One document signature: 128-bit hash of (language, cleaned text), its row, its characters.
SIG_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("row", "<u4"), ("chars", "<u4")])


class ShardMissingError(ETLError):
    """The merge found a planned shard without its output; no manifest is written."""


class ShardHashError(ETLError):
    """A shard's content no longer matches the hash its task recorded; no manifest is written."""


class Layout:
    """Paths of one sharded output folder."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.engine = self.out / ENGINE

    def logs(self, stage: str) -> Path:
        return self.engine / "logs" / stage

    def clean(self, shard: str) -> Path:
        return self.engine / "clean" / f"{shard}.arrow"

    def clean_stats(self, shard: str) -> Path:
        return self.engine / "clean" / f"{shard}.json"

    def sig(self, shard: str) -> Path:
        return self.engine / "sig" / f"{shard}.npy"

    def dups(self, bucket: int) -> Path:
        return self.engine / "dups" / f"{bucket:05d}.json"

    def near_removed(self, shard: str) -> Path:
        """Rows of a clean shard that MinHash near-dedup drops (mt5study.data.near_dedup)."""
        return self.engine / "near_dedup" / "removed" / f"{shard}.json"

    def encode_stats(self, shard: str) -> Path:
        return self.engine / "encode" / f"{shard}.json"

    def shard(self, split: str, shard: str) -> Path:
        return self.out / "shards" / split / f"{shard}.arrow"

    @property
    def tokenizer(self) -> Path:
        return self.out / "tokenizer"


def write_json(path: Path, data: Any) -> None:
    """JSON written to a temporary name and renamed: a reader sees all of it or nothing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def doc_hashes(lang: str, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(hi, lo) uint64 halves of blake2b-128 over language and text: the exact-dedup key."""
    hi, lo = np.empty(len(texts), "<u8"), np.empty(len(texts), "<u8")
    prefix = lang.encode("utf-8") + b"\x00"
    for i, t in enumerate(texts):
        d = hashlib.blake2b(prefix + t.encode("utf-8"), digest_size=16).digest()
        hi[i], lo[i] = int.from_bytes(d[:8], "little"), int.from_bytes(d[8:], "little")
    return hi, lo


def write_signatures(path: Path, sig: np.ndarray, buckets: int) -> list[int]:
    """Save signatures sorted by bucket (hash mod buckets); returns the bucket offsets."""
    bucket = (sig["hi"] % np.uint64(buckets)).astype(np.int64)
    order = np.argsort(bucket, kind="stable")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npy")
    np.save(tmp, sig[order])
    os.replace(tmp, path)
    return np.concatenate([[0], np.cumsum(np.bincount(bucket, minlength=buckets))]).astype(int).tolist()


def example_schema(inputs_len: int, targets_len: int) -> pa.Schema:
    return pa.schema([("input_ids", pa.list_(pa.int32(), inputs_len)),
                      ("labels", pa.list_(pa.int32(), targets_len))])


def write_examples(path: Path, inputs: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """One shard of examples as an Arrow IPC file (random access, memory-mappable)."""
    schema = example_schema(inputs.shape[1], labels.shape[1])
    cols = [pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.int32).ravel(), pa.int32()), a.shape[1])
            for a in (inputs, labels)]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with pa.OSFile(str(tmp), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        for start in range(0, len(inputs), 65536):  # record batches of <= 64k examples
            writer.write_batch(pa.record_batch([c.slice(start, 65536) for c in cols], schema=schema))
    os.replace(tmp, path)
    return {"path": str(path.relative_to(path.parents[2])), "examples": int(len(inputs)),
            "sha256": examples_hash(path)}


def open_examples(path: Path) -> pa.Table:
    """A shard's examples, memory-mapped (nothing is read until used)."""
    return pa.ipc.open_file(pa.memory_map(str(path), "r")).read_all()


def examples_hash(path: Path) -> str:
    """sha256 of a shard's input_ids then labels, row by row (independent of batch layout)."""
    h = hashlib.sha256()
    table = open_examples(path)
    for batch in table.to_batches():
        ids = batch.column(0).flatten().to_numpy().astype("<i4")
        lab = batch.column(1).flatten().to_numpy().astype("<i4")
        h.update(np.concatenate([ids.reshape(len(batch), -1), lab.reshape(len(batch), -1)], axis=1).tobytes())
    return h.hexdigest()


def verify_shards(layout: Layout, plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every planned shard's counts and example files, each re-hashed against what its task
    recorded; ShardMissingError / ShardHashError name every shard at fault."""
    missing, wrong, found = [], [], {}
    for shard in plan["shards"]:
        sid = shard["id"]
        stats_path = layout.encode_stats(sid)
        if not layout.clean_stats(sid).exists() or not stats_path.exists():
            missing.append(f"{sid} (no {'clean' if not layout.clean_stats(sid).exists() else 'encode'} output)")
            continue
        stats = read_json(stats_path)
        for split in SPLITS:
            rec = stats["files"][split]
            path = layout.out / rec["path"]
            if not path.exists():
                missing.append(f"{sid} ({rec['path']})")
            elif examples_hash(path) != rec["sha256"]:
                wrong.append(f"{sid} ({rec['path']}: recorded {rec['sha256'][:12]})")
        found[sid] = stats
    if missing:
        raise ShardMissingError(f"{len(missing)} of {len(plan['shards'])} shards missing, no manifest written: "
                                + "; ".join(missing[:8]) + ("; ..." if len(missing) > 8 else ""))
    if wrong:
        raise ShardHashError(f"{len(wrong)} shards differ from their recorded hash, no manifest written: "
                             + "; ".join(wrong[:8]) + ("; ..." if len(wrong) > 8 else ""))
    return found


def split_hash(shard_records: list[tuple[str, str]]) -> str:
    """A split's content hash: over (shard id, shard hash) in shard order."""
    h = hashlib.sha256()
    for sid, sha in shard_records:
        h.update(f"{sid}\t{sha}\n".encode())
    return h.hexdigest()
