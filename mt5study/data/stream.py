"""Reading a sharded ETL output: the languages' example shards, memory-mapped, interleaved with
the temperature probabilities as they are read (no global dataset is ever written or loaded).

The stream is endless and a pure function of (seed, position):
  * positions come in blocks of `mix_block`; every block holds q_l = round(p_l * mix_block)
    examples of language l (largest remainders, so the q_l sum to the block), in an order
    drawn with the seed (seed, block); language l's j-th example overall is therefore at
    j = q_l * block + (its rank inside the block), computed without any history;
  * language l's example j is its example (a * (j mod n_l) + b) mod n_l of epoch j // n_l, an
    affine permutation seeded by (seed, language, epoch) with gcd(a, n_l) = 1: every example
    once per epoch, in a new order each epoch, with O(1) memory whatever n_l;
  * that index maps to (shard, row) by the cumulative shard sizes.
So a resume at any position reads exactly what an uninterrupted run would, and a process reads
only the rows it needs (Arrow IPC files opened with pa.memory_map).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path
from typing import Any

import numpy as np

from mt5study.data.shards import open_examples
from mt5study.data.sources import stable_seed


def apportion(probs: dict[str, float], block: int) -> dict[str, int]:
    """Examples per block and language: floor(p * block) plus one for the largest remainders."""
    langs = sorted(probs)
    total = math.fsum(probs.values())
    exact = np.array([probs[lang] / total * block for lang in langs])
    q = np.floor(exact).astype(int)
    rest = block - int(q.sum())
    order = sorted(range(len(langs)), key=lambda i: (-(exact[i] - q[i]), langs[i]))
    for i in order[:rest]:
        q[i] += 1
    return {lang: int(n) for lang, n in zip(langs, q)}


@functools.lru_cache(maxsize=4096)
def _affine(n: int, seed: int, lang: str, epoch: int) -> tuple[int, int]:
    """(a, b) of the permutation i -> (a i + b) mod n, a coprime to n."""
    if n == 1:
        return 1, 0
    rng = np.random.default_rng([seed, stable_seed(lang), epoch, 3])
    while True:
        a = int(rng.integers(1, n))
        if math.gcd(a, n) == 1:
            return a, int(rng.integers(0, n))


class ShardedSplit:
    """One split of a sharded ETL output as an endless seeded mixture of its languages.

    `len()` is one pass's worth (the split's examples); positions beyond it continue the
    stream. Indexing with an int, slice or array of positions gives {"input_ids", "labels"}
    as int32 arrays (a batch) or rows (an int). `with_format` returns the split itself, so it
    stands where the trainer expects a `datasets.Dataset`.
    """

    is_stream = True

    def __init__(self, root: str | Path, split: str, manifest: dict[str, Any], seed: int):
        self.root, self.split, self.seed = Path(root), split, seed
        self.block = int(manifest.get("mix_block", 4096))
        shards: dict[str, list[tuple[str, int]]] = {}
        for s in manifest["shards"]:
            rec = s[split]
            if rec["examples"] > 0:
                shards.setdefault(s["lang"], []).append((rec["path"], rec["examples"]))
        probs = {lang: p for lang, p in manifest["split_probabilities"][split].items() if lang in shards}
        if not probs:
            raise ValueError(f"{root}: split {split!r} has no examples")
        self.quota = {lang: q for lang, q in apportion(probs, self.block).items() if q > 0}
        self.langs = sorted(self.quota)
        self.shards = {lang: shards[lang] for lang in self.langs}
        self.sizes = {lang: sum(n for _, n in shards[lang]) for lang in self.langs}
        self.bounds = {lang: np.cumsum([0] + [n for _, n in self.shards[lang]]) for lang in self.langs}
        self.total = sum(sum(n for _, n in v) for v in shards.values())
        self.slots = np.repeat(np.arange(len(self.langs)), [self.quota[lang] for lang in self.langs])
        self._tables: dict[str, Any] = {}
        self._blocks: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.total

    def with_format(self, *_args, **_kwargs) -> "ShardedSplit":
        return self

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the memory maps
        state = dict(self.__dict__)
        state["_tables"], state["_blocks"] = {}, {}
        return state

    def _block(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Language index and rank within the language of every slot of block k."""
        if k not in self._blocks:
            if len(self._blocks) > 8:
                self._blocks.clear()
            lang = self.slots[np.random.default_rng([self.seed, k, 4]).permutation(self.block)]
            rank = np.empty(self.block, np.int64)
            for li in range(len(self.langs)):
                where = np.flatnonzero(lang == li)
                rank[where] = np.arange(len(where))
            self._blocks[k] = (lang, rank)
        return self._blocks[k]

    def locate(self, positions: np.ndarray) -> list[tuple[str, int, int]]:
        """(shard path, row, language index) of each stream position."""
        out = []
        for p in np.asarray(positions, dtype=np.int64).ravel():
            k, r = divmod(int(p), self.block)
            lang_idx, rank = self._block(k)
            lang = self.langs[lang_idx[r]]
            j = self.quota[lang] * k + int(rank[r])
            n = self.sizes[lang]
            epoch, i = divmod(j, n)
            a, b = _affine(n, self.seed, lang, epoch)
            idx = (a * i + b) % n
            s = int(np.searchsorted(self.bounds[lang], idx, side="right") - 1)
            out.append((self.shards[lang][s][0], idx - int(self.bounds[lang][s]), int(lang_idx[r])))
        return out

    def _table(self, path: str) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
        """Row offsets of a shard's record batches and zero-copy (rows, length) views of each."""
        if path not in self._tables:
            table = open_examples(self.root / path)
            views: tuple[list[np.ndarray], list[np.ndarray]] = ([], [])
            for col, out in zip(range(2), views):
                for chunk in table.column(col).chunks:
                    out.append(chunk.flatten().to_numpy().reshape(len(chunk), -1))
            starts = np.cumsum([0] + [len(c) for c in table.column(0).chunks])
            self._tables[path] = (starts, *views)
        return self._tables[path]

    def _rows(self, positions: np.ndarray) -> dict[str, Any]:
        where = self.locate(positions)
        inputs, labels = [], []
        for path, row, _ in where:
            starts, xs, ys = self._table(path)
            c = int(np.searchsorted(starts, row, side="right") - 1)
            inputs.append(xs[c][row - starts[c]])
            labels.append(ys[c][row - starts[c]])
        return {"input_ids": np.stack(inputs).astype(np.int32), "labels": np.stack(labels).astype(np.int32),
                "lang": [self.langs[li] for _, _, li in where]}

    def __getitem__(self, key):
        if isinstance(key, (int, np.integer)):
            rows = self._rows(np.array([key]))
            return {"input_ids": rows["input_ids"][0], "labels": rows["labels"][0], "lang": rows["lang"][0]}
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            return self._rows(np.arange(start, stop, step))
        return self._rows(np.asarray(key))


def open_sharded(root: str | Path, manifest: dict[str, Any], seed: int) -> dict[str, ShardedSplit]:
    """Both splits of a sharded output (mt5study-etl-sharded/1)."""
    return {split: ShardedSplit(root, split, manifest, seed) for split in ("train", "validation")}
