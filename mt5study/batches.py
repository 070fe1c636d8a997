"""The trainer's data: an ETL dataset on disk (or a small seeded one built in code), and a batch
order that depends only on (seed, step), so resume is exact and any ZeRO stage or split of the
global batch over processes sees the same examples at the same step.

Dataset schema (written by `mt5study.data.etl`): a `datasets.DatasetDict` with splits `train`
and `validation`, columns `input_ids` (exactly `input_length` int32 ids) and `labels` (exactly
`target_length` ids, -100 where padded). A sharded output (mt5study.data.engine) is read as a
stream over memory-mapped Arrow shards (mt5study.data.stream.ShardedSplit): the same
(seed, step) -> examples contract, nothing loaded whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from mt5study.config import DataConfig, RunConfig
from mt5study.records import read_json

SHARDED_FORMAT = "mt5study-etl-sharded/1"  # mt5study.data.engine.FORMAT (not imported: keeps datatrove out)

PAD_ID, EOS_ID = 0, 1  # T5/mT5 special ids
IGNORE = -100  # label positions the loss skips


def synthetic_splits(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """A learnable seeded task in the dataset schema: reverse the first target tokens.

    Token ids follow a Zipf-like law over [2, vocab) so that frequent tokens exist, as in text.
    """
    import datasets

    syn = cfg.synthetic
    rng = np.random.default_rng([seed, 0x5EED])
    ranks = np.arange(1, syn.vocab_size - 1)
    probs = 1.0 / ranks
    probs /= probs.sum()

    def make(n: int) -> "datasets.Dataset":
        ids = 2 + rng.choice(len(ranks), size=(n, cfg.input_length), p=probs)
        labels = np.empty((n, cfg.target_length), dtype=np.int64)
        labels[:, :-1] = ids[:, : cfg.target_length - 1][:, ::-1]
        labels[:, -1] = EOS_ID
        ids[:, -1] = EOS_ID
        return datasets.Dataset.from_dict(
            {"input_ids": ids.astype(np.int32), "labels": labels.astype(np.int32)}
        )

    return {"train": make(syn.num_train), "validation": make(syn.num_validation), "vocab_size": syn.vocab_size}


def load_splits(cfg: DataConfig, seed: int) -> dict[str, Any]:
    """Train and validation datasets plus the vocabulary size they need."""
    if cfg.path is None:
        return synthetic_splits(cfg, seed)
    import datasets

    from mt5study.paths import ROOT

    root = Path(cfg.path) if Path(cfg.path).is_absolute() else ROOT / cfg.path  # relative: to the repo
    manifest_path = root / "manifest.json"
    if not manifest_path.exists():
        raise FileNotFoundError(f"data.path={root}: no manifest.json (not a completed ETL output)")
    manifest = read_json(manifest_path)
    if manifest.get("format") == SHARDED_FORMAT:
        return load_sharded(root, manifest, cfg, seed)
    ds = datasets.load_from_disk(str(root / "dataset"))
    for split in ("train", "validation"):
        if split not in ds:
            raise ValueError(f"data.path={root}: dataset has no {split!r} split")
    want = {"input_ids": cfg.input_length, "labels": cfg.target_length}
    for col, length in want.items():
        got = len(ds["train"][0][col])
        if got != length:
            key = "input_length" if col == "input_ids" else "target_length"
            raise ValueError(f"data.{key}={length} but {root} holds {col} of length {got}")
    return {"train": ds["train"], "validation": ds["validation"], "vocab_size": int(manifest["vocab_size"])}


def load_sharded(root: Path, manifest: dict[str, Any], cfg: DataConfig, seed: int) -> dict[str, Any]:
    """A sharded ETL output, read as streams over its memory-mapped shards: train mixed with the
    run's seed, validation with the ETL's seed (the same held-out examples for every run)."""
    from mt5study.data.stream import ShardedSplit

    want = {"data.input_length": (cfg.input_length, manifest["inputs_length"]),
            "data.target_length": (cfg.target_length, manifest["targets_length"])}
    for key, (asked, held) in want.items():
        if asked != held:
            raise ValueError(f"{key}={asked} but {root} holds examples of length {held}")
    return {"train": ShardedSplit(root, "train", manifest, seed),
            "validation": ShardedSplit(root, "validation", manifest, int(manifest["seed"])),
            "vocab_size": int(manifest["vocab_size"])}


class MicroBatches(torch.utils.data.Dataset):
    """Micro-batch k of this process, for k counted from `start_step` * grad_accum.

    Examples are read in an endless stream of seeded permutations (one per epoch). The stream
    position is counted in examples, so a resume at another split of the global batch (another
    world size) continues at the same example: with x0 = `start_example` (default
    start_step * G), the global batch of the i-th step from the start is positions
    [x0 + i*G, x0 + (i+1)*G); micro-batch m of rank r takes positions x0 + i*G + m*(b*W) + r*b
    ... + b, with b = micro_batch, W = world size and G = b * grad_accum * W.
    """

    def __init__(self, dataset: Any, run: RunConfig, rank: int, world: int, start_step: int, seed: int,
                 start_example: int | None = None):
        self.ds, self.n = dataset.with_format("numpy"), len(dataset)
        self.b, self.ga, self.rank, self.world = run.micro_batch, run.grad_accum, rank, world
        self.global_batch = run.micro_batch * run.grad_accum * world
        self.start, self.total, self.seed = start_step, run.steps, seed
        self.start_example = start_step * self.global_batch if start_example is None else start_example
        if self.start_example < 0:
            raise ValueError(f"start_example must be >= 0, got {start_example}")
        if self.n < self.b * world:
            raise ValueError(f"dataset has {self.n} examples, fewer than one micro-batch on every rank")
        self._perms: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return (self.total - self.start) * self.ga

    def positions(self, k: int) -> np.ndarray:
        step, micro = divmod(k, self.ga)  # steps from this attempt's start
        first = self.start_example + step * self.global_batch + micro * self.b * self.world + self.rank * self.b
        return np.arange(first, first + self.b)

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._perms:
            self._perms = {epoch: np.random.default_rng([self.seed, epoch]).permutation(self.n)}
        return self._perms[epoch]

    def __getitem__(self, k: int) -> dict[str, torch.Tensor]:
        pos = self.positions(k)
        if getattr(self.ds, "is_stream", False):  # a ShardedSplit is already a seeded endless stream
            idx = pos
        else:
            idx = np.array([self._perm(p // self.n)[p % self.n] for p in pos])
        rows = self.ds[idx]
        return {
            "input_ids": torch.as_tensor(np.asarray(rows["input_ids"], dtype=np.int64)),
            "labels": torch.as_tensor(np.asarray(rows["labels"], dtype=np.int64)),
        }


def eval_batches(dataset: Any, micro_batch: int, n_batches: int, rank: int, world: int) -> list[dict[str, torch.Tensor]]:
    """The fixed held-out micro-batches of this rank (the first examples of the split)."""
    ds = dataset.with_format("numpy")
    out = []
    for m in range(n_batches):
        first = (m * world + rank) * micro_batch
        if first + micro_batch > len(ds):
            break
        rows = ds[first : first + micro_batch]
        out.append({
            "input_ids": torch.as_tensor(np.asarray(rows["input_ids"], dtype=np.int64)),
            "labels": torch.as_tensor(np.asarray(rows["labels"], dtype=np.int64)),
        })
    if not out:
        raise ValueError(f"validation split has {len(ds)} examples: too few for one micro-batch per rank")
    return out


def attention_mask(input_ids: torch.Tensor) -> torch.Tensor:
    return (input_ids != PAD_ID).long()
