"""The sharded ETL's stages as datatrove pipeline steps: clean → dedup → tokenizer → encode → merge.

Each step is one datatrove `PipelineStep`; its executor (local or Slurm array) calls it once per
task with (rank, world_size). Work is per shard (a fixed group of input files, see
mt5study.data.plan), so the result does not depend on the number of tasks; a shard whose
outputs exist already is skipped, so a re-run task only redoes what is missing.

  clean     per shard: read (the project's sources), clean (mt5study.data.clean, without its
            in-memory dedup), write documents and their 128-bit hashes sorted by bucket
  dedup     per bucket: exact duplicates across all shards (first by shard order, then row)
  (engine.near_dedup.enabled: four MinHash stages here, mt5study.data.near_dedup)
  tokenizer one task: temperature probabilities from the kept counts; train SentencePiece on a
            balanced sample (or save the released tokenizer)
  encode    per shard: drop duplicates, split train/validation, tokenize, pack, span-corrupt,
            write Arrow example shards with their hashes
  merge     one task: verify every shard and its hash, sum the counts, write manifest.json
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from datatrove.pipeline.base import PipelineStep

from mt5study.data.clean import empty_stats, clean_documents, read_docs
from mt5study.data.config import ETLConfig
from mt5study.data.corruption import pad_to, span_corrupt_batch, span_corruption_lengths
from mt5study.data.output import LABEL_PAD, SPLITS, ETLError
from mt5study.data.plan import InputsChangedError, ShardReadError, check_shard_files, task_shards
from mt5study.data.shards import (
    SIG_DTYPE, Layout, doc_hashes, read_json, write_examples, write_json, write_signatures,
)
from mt5study.data.sources import BadRecords, Document, SourceError, stable_seed
from mt5study.data.tokenizer import EOS_ID, PAD_ID, Encoder

STAGES = ("clean", "dedup", "tokenizer", "encode", "merge")


class Stage(PipelineStep):
    """One stage of the ETL over a run folder; `tasks(cfg)` says how many tasks it has."""

    type = "mt5study"

    def __init__(self, cfg: ETLConfig, out: str):
        super().__init__()
        self.cfg, self.out = cfg, str(out)

    @property
    def layout(self) -> Layout:
        return Layout(self.out)

    @property
    def plan(self) -> dict[str, Any]:
        return read_json(self.layout.engine / "plan.json")

    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return 1

    def run(self, data, rank: int = 0, world_size: int = 1):
        with self.track_time(unit="task"):  # seconds of this task, in datatrove's stats/<rank>.json
            self.run_task(rank, world_size)
        return data


# ----------------------------------------------------------------------------- clean


def shard_documents(cfg: ETLConfig, shard: dict[str, Any], bad: BadRecords):
    """(id, text) of a shard's documents through the project's readers, with the seeded
    `fraction` and the shard's share of max_docs_per_language."""
    from mt5study.data import sources

    src, lang = cfg.source, shard["lang"]
    if shard.get("kind") == "catalogs":  # the files were listed for the plan's change check
        from mt5study.data.catalog_text import CatalogTextReader

        yield from ((d.id, d.text) for d in CatalogTextReader(src.catalogs).documents(lang, bad))
        return
    if src.kind == "manpages":
        docs = (Document(id=str(Path(f["path"]).relative_to(src.manpages.man_dir)), lang=lang, text=t)
                for f in shard["files"] if (t := sources.render_manpage(f["path"], src.manpages.render_timeout_s, bad)))
        yield from ((d.id, d.text) for d in docs)  # pages were sampled when planning
        return
    if src.kind == "files":
        docs = (d for f in shard["files"] for d in sources.read_records(
            Path(f["path"]), lang, src.files.text_field, src.files.txt_documents, bad))
    elif src.mc4.data_files is None:
        docs = sources.MC4Reader(src.mc4).documents(lang, None, cfg.seed, bad)
    else:
        docs = (d for f in shard["files"]
                for d in sources.MC4Reader(src.mc4.model_copy(update={"data_files": f["path"]})).documents(
                    lang, None, cfg.seed, bad))
    rng = np.random.default_rng([cfg.seed, stable_seed(shard["id"])])
    n = 0
    for d in docs:
        if src.fraction < 1.0 and rng.random() >= src.fraction:
            continue
        yield d.id, d.text
        n += 1
        if shard["cap"] is not None and n >= shard["cap"]:
            return


class CleanStage(Stage):
    """Read and clean each shard of this task; a shard that cannot be read fails the task
    (ShardReadError, after the task's other shards are done)."""

    name = "clean"

    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return cfg.engine.tasks

    def run_task(self, rank: int, world_size: int) -> None:
        failed = []
        for shard in task_shards(self.plan, rank, world_size):
            if self.layout.clean_stats(shard["id"]).exists():
                self.stat_update("shards_skipped")
                continue
            try:
                self.clean_shard(shard)
            except (ShardReadError, InputsChangedError) as e:
                failed.append(e)
            except (OSError, SourceError, EOFError) as e:
                failed.append(ShardReadError(f"shard {shard['id']}: {type(e).__name__}: {e}"))
        if failed:
            kind = type(failed[0])
            raise kind(f"task {rank}: {len(failed)} shard(s) failed: " + "; ".join(str(e) for e in failed))

    def clean_shard(self, shard: dict[str, Any]) -> None:
        cfg, lay, sid = self.cfg, self.layout, shard["id"]
        check_shard_files(shard)
        bad = BadRecords(policy=cfg.source.on_bad_record)
        out = lay.clean(sid)
        out.parent.mkdir(parents=True, exist_ok=True)
        work = lay.engine / "clean" / f".work-{sid}"
        work.mkdir(exist_ok=True)
        # exact dedup runs across shards in the dedup stage, not in memory here
        ccfg = cfg.cleaning.model_copy(update={"deduplicate": False})
        stats = clean_documents(shard_documents(cfg, shard, bad), shard["lang"], ccfg, out, work)
        shutil.rmtree(work, ignore_errors=True)
        texts = [t for _, _, t in read_docs(out)]
        sig = np.empty(len(texts), SIG_DTYPE)
        sig["hi"], sig["lo"] = doc_hashes(shard["lang"], texts)
        sig["row"] = np.arange(len(texts))
        sig["chars"] = [len(t) for t in texts]
        stats["sig_offsets"] = write_signatures(lay.sig(sid), sig, cfg.engine.dedup_buckets)
        stats["bad_records"] = {"count": bad.count, "messages": bad.messages}
        stats["lang"] = shard["lang"]
        self.stat_update("documents_read", value=stats["read"]["docs"])
        self.stat_update("documents_kept", value=stats["kept"]["docs"])
        write_json(lay.clean_stats(sid), stats)  # last: the shard is cleaned


# ----------------------------------------------------------------------------- dedup


class DedupStage(Stage):
    """Exact duplicates in one hash bucket across every shard: the first occurrence (shard
    order, then row) is kept, the others are listed in dups/<bucket>.json."""

    name = "dedup"

    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return cfg.engine.dedup_buckets

    def run_task(self, rank: int, world_size: int) -> None:
        lay, parts, owner = self.layout, [], []
        shards = [s["id"] for s in self.plan["shards"]]
        for k, sid in enumerate(shards):
            off = read_json(lay.clean_stats(sid))["sig_offsets"]
            part = np.load(lay.sig(sid), mmap_mode="r")[off[rank]:off[rank + 1]]
            parts.append(np.asarray(part))
            owner.append(np.full(len(part), k, np.int64))
        sig = np.concatenate(parts) if parts else np.empty(0, SIG_DTYPE)
        who = np.concatenate(owner) if owner else np.empty(0, np.int64)
        order = np.lexsort((sig["row"], who, sig["lo"], sig["hi"]))
        s, w = sig[order], who[order]
        dup = np.zeros(len(s), bool)
        dup[1:] = (s["hi"][1:] == s["hi"][:-1]) & (s["lo"][1:] == s["lo"][:-1])
        found: dict[str, dict[str, Any]] = {}
        for k, row, chars in zip(w[dup], s["row"][dup], s["chars"][dup]):
            rec = found.setdefault(shards[k], {"rows": [], "chars": 0})
            rec["rows"].append(int(row))
            rec["chars"] += int(chars)
        for rec in found.values():
            rec["rows"].sort()
        self.stat_update("duplicates", value=int(dup.sum()))
        write_json(lay.dups(rank), found)


def exact_duplicates(layout: Layout, buckets: int) -> dict[str, dict[str, Any]]:
    """Exact duplicate rows and characters per shard, from every bucket."""
    out: dict[str, dict[str, Any]] = {}
    for b in range(buckets):
        for sid, rec in read_json(layout.dups(b)).items():
            acc = out.setdefault(sid, {"rows": [], "chars": 0})
            acc["rows"] += rec["rows"]
            acc["chars"] += rec["chars"]
    return out


def duplicates(layout: Layout, buckets: int) -> dict[str, dict[str, Any]]:
    """Rows and characters per shard dropped as duplicates: the exact ones, plus (where
    engine.near_dedup ran) the MinHash near-duplicates, counted apart in near_docs/near_chars."""
    out = exact_duplicates(layout, buckets)
    folder = layout.near_removed("x").parent
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        rec = read_json(path)
        acc = out.setdefault(path.stem, {"rows": [], "chars": 0})
        acc["rows"] = sorted(acc["rows"] + rec["rows"])
        acc["chars"] += rec["chars"]
        acc["near_docs"], acc["near_chars"] = len(rec["rows"]), rec["chars"]
    return out


def kept_sizes(cfg: ETLConfig, layout: Layout, plan: dict[str, Any]) -> dict[str, dict[str, int]]:
    """Per language: documents and characters kept after cleaning and deduplication."""
    dups = duplicates(layout, cfg.engine.dedup_buckets)
    sizes: dict[str, dict[str, int]] = {}
    for shard in plan["shards"]:
        st, d = read_json(layout.clean_stats(shard["id"])), dups.get(shard["id"], {"rows": [], "chars": 0})
        acc = sizes.setdefault(shard["lang"], {"docs": 0, "chars": 0})
        acc["docs"] += st["kept"]["docs"] - len(d["rows"])
        acc["chars"] += st["kept"]["chars"] - d["chars"]
    return sizes


def shard_split(cfg: ETLConfig, shard_id: str, n: int) -> np.ndarray:
    """True for the validation documents among a shard's n kept documents: max(1, round(f * n))
    of them where f > 0 and n >= 2, chosen with a seed of (seed, shard)."""
    f = cfg.output.validation_fraction
    n_val = max(1, round(f * n)) if f > 0 and n >= 2 else 0
    is_val = np.zeros(n, bool)
    is_val[np.random.default_rng([cfg.seed, stable_seed(shard_id), 1]).choice(n, size=n_val, replace=False)] = True
    return is_val


def kept_documents(cfg: ETLConfig, layout: Layout, shard_id: str, dup_rows: list[int]):
    """(ids, texts, is_validation) of a shard after deduplication."""
    rows = list(read_docs(layout.clean(shard_id)))
    drop = set(dup_rows)
    ids = [r[0] for i, r in enumerate(rows) if i not in drop]
    texts = [r[2] for i, r in enumerate(rows) if i not in drop]
    return ids, texts, shard_split(cfg, shard_id, len(texts))


# ----------------------------------------------------------------------------- tokenizer


class TokenizerStage(Stage):
    """One task: the tokenizer every encode task uses, trained on a temperature-balanced sample."""

    name = "tokenizer"

    def run_task(self, rank: int, world_size: int) -> None:
        from mt5study.data.sampling import temperature_probs
        from mt5study.data.tokenizer import load_tokenizer, train_on_sample

        cfg, lay, plan = self.cfg, self.layout, self.plan
        record_path = lay.engine / "tokenizer.json"
        if record_path.exists():
            return
        sizes = kept_sizes(cfg, lay, plan)
        unit = "docs" if cfg.sampling.size_unit == "documents" else "chars"
        langs = [lang for lang, s in sorted(sizes.items()) if s["docs"] > 0]
        if not langs:
            raise ETLError("no language has documents left after cleaning")
        probs = temperature_probs({lang: sizes[lang][unit] for lang in langs}, cfg.sampling.alpha, cfg.sampling.cap)
        if lay.tokenizer.exists():
            shutil.rmtree(lay.tokenizer)  # a half-written one from a killed task
        tc = cfg.tokenizer
        if tc.pretrained is not None:
            load_tokenizer(tc.pretrained).save_pretrained(str(lay.tokenizer))
            record: dict[str, Any] = {"kind": "pretrained", "name": tc.pretrained}
        else:
            work = lay.engine / "tokenizer_work"
            work.mkdir(parents=True, exist_ok=True)
            sample = work / "tokenizer_sample.txt"
            chars = self.write_sample(plan, probs, sample)
            record = train_on_sample(cfg, sample, chars, lay.tokenizer, work)
            shutil.rmtree(work, ignore_errors=True)
        write_json(record_path, {"record": record, "probabilities": probs})

    def write_sample(self, plan: dict[str, Any], probs: dict[str, float], path: Path) -> dict[str, int]:
        """p_l * sample_chars characters of each language's training documents, shards and
        documents in seeded order; lines cut at max_sentence_chars."""
        cfg, lay, tc = self.cfg, self.layout, self.cfg.tokenizer
        dups = duplicates(lay, cfg.engine.dedup_buckets)
        taken = {}
        with open(path, "w", encoding="utf-8") as f:
            for lang, p in sorted(probs.items()):
                shards = [s["id"] for s in plan["shards"] if s["lang"] == lang]
                rng = np.random.default_rng([cfg.seed, stable_seed(lang), 2])
                budget, used = p * tc.sample_chars, 0
                for k in rng.permutation(len(shards)):
                    if used >= budget:
                        break
                    _, texts, is_val = kept_documents(cfg, lay, shards[k], dups.get(shards[k], {"rows": []})["rows"])
                    for i in rng.permutation(len(texts)):
                        if is_val[i]:
                            continue
                        for line in texts[i].split("\n"):
                            line = line.strip()[:tc.max_sentence_chars]
                            if line and used < budget:
                                f.write(line + "\n")
                                used += len(line)
                taken[lang] = used
        return taken


# ----------------------------------------------------------------------------- encode


def corrupt_stream(tokens: np.ndarray, cfg: ETLConfig, sentinels: list[int], shard_id: str, split: str):
    """Pack one token stream into raw-length chunks (the last partial one dropped) and
    span-corrupt them, units of chunks_per_unit with one RNG stream each."""
    c = cfg.corruption
    raw_len, targets_len = span_corruption_lengths(c.inputs_length, c.noise_density, c.mean_noise_span_length)
    n = len(tokens) // raw_len
    chunks = tokens[: n * raw_len].reshape(n, raw_len)
    xs, ys = [np.empty((0, c.inputs_length), np.int32)], [np.empty((0, targets_len), np.int32)]
    for unit, start in enumerate(range(0, n, c.chunks_per_unit)):
        rng = np.random.default_rng([cfg.seed, stable_seed(shard_id), SPLITS.index(split), unit])
        x, y = span_corrupt_batch(chunks[start:start + c.chunks_per_unit], c.noise_density, c.mean_noise_span_length,
                                  sentinels, rng, EOS_ID)
        xs.append(pad_to(x, c.inputs_length, PAD_ID))
        ys.append(pad_to(y, targets_len, LABEL_PAD))
    return np.concatenate(xs).astype(np.int32), np.concatenate(ys).astype(np.int32)


class EncodeStage(Stage):
    """Tokenize, pack and span-corrupt each shard of this task into its example shards."""

    name = "encode"

    @staticmethod
    def tasks(cfg: ETLConfig) -> int:
        return cfg.engine.tasks

    def run_task(self, rank: int, world_size: int) -> None:
        from mt5study.data.tokenizer import vocab_and_sentinels

        lay = self.layout
        todo = [s for s in task_shards(self.plan, rank, world_size) if not lay.encode_stats(s["id"]).exists()]
        if not todo:
            return
        dups = duplicates(lay, self.cfg.engine.dedup_buckets)
        sentinels = vocab_and_sentinels(lay.tokenizer)[1]
        encoder = Encoder(str(lay.tokenizer))
        for shard in todo:
            self.encode_shard(shard, dups.get(shard["id"], {"rows": []})["rows"], encoder, sentinels)

    def encode_shard(self, shard: dict[str, Any], dup_rows: list[int], encoder: Encoder, sentinels: list[int]) -> None:
        cfg, lay, sid = self.cfg, self.layout, shard["id"]
        ids, texts, is_val = kept_documents(cfg, lay, sid, dup_rows)
        rec: dict[str, Any] = {"lang": shard["lang"], "documents": {}, "tokens": {}, "characters": {},
                               "examples": {}, "files": {}}
        for split in SPLITS:
            pick = [i for i in range(len(texts)) if is_val[i] == (split == "validation")]
            encoded = []
            for start in range(0, len(pick), 256):
                encoded += encoder.encode([texts[i] for i in pick[start:start + 256]])
            stream = np.fromiter((t for doc in encoded for t in [*doc, EOS_ID]), np.int32,
                                 count=sum(len(d) + 1 for d in encoded))
            x, y = corrupt_stream(stream, cfg, sentinels, sid, split)
            rec["documents"][split] = len(pick)
            rec["tokens"][split] = int(len(stream))
            rec["characters"][split] = int(sum(len(texts[i]) for i in pick))
            rec["examples"][split] = int(len(x))
            rec["files"][split] = write_examples(lay.shard(split, sid), x, y)
            self.stat_update(f"examples_{split}", value=int(len(x)))
        write_json(lay.encode_stats(sid), rec)  # last: the shard is encoded


# ----------------------------------------------------------------------------- merge


class MergeStage(Stage):
    """One task: verify every shard (ShardMissingError, ShardHashError), then write the manifest."""

    name = "merge"

    def run_task(self, rank: int, world_size: int) -> None:
        from mt5study.data.engine import write_manifest

        write_manifest(self.cfg, Path(self.out))


STAGE_CLASSES = {c.name: c for c in (CleanStage, DedupStage, TokenizerStage, EncodeStage, MergeStage)}


def merged_counts(cfg: ETLConfig, layout: Layout, plan: dict[str, Any], encoded: dict[str, dict[str, Any]]):
    """Per-language counts summed over shards (read, each filter, kept, documents, tokens,
    characters, examples) and per-task totals of the clean and encode stages."""
    dups = duplicates(layout, cfg.engine.dedup_buckets)
    langs: dict[str, dict[str, Any]] = {}
    tasks = [{"task": t, "shards": 0, "read_docs": 0, "kept_docs": 0, "examples": 0, "tokens": 0}
             for t in range(cfg.engine.tasks)]
    for k, shard in enumerate(plan["shards"]):
        sid = shard["id"]
        st, enc, d = read_json(layout.clean_stats(sid)), encoded[sid], dups.get(sid, {"rows": [], "chars": 0})
        row = langs.setdefault(shard["lang"], {**empty_stats(), "bad_records": 0, "shards": 0, "boilerplate_lines": 0,
                                               **{key: {s: 0 for s in SPLITS} for key in
                                                  ("documents", "tokens", "characters", "examples")}})
        for key, val in st.items():
            if isinstance(val, dict) and key in row and isinstance(row[key], dict) and key not in enc:
                for sub, v in val.items():
                    if isinstance(v, int):
                        row[key][sub] = row[key].get(sub, 0) + v
        near_docs, near_chars = d.get("near_docs", 0), d.get("near_chars", 0)
        row["duplicate"]["docs"] += len(d["rows"]) - near_docs
        row["duplicate"]["chars"] += d["chars"] - near_chars
        if cfg.engine.near_dedup.enabled:
            near = row.setdefault("near_duplicate", {"docs": 0, "chars": 0})
            near["docs"] += near_docs
            near["chars"] += near_chars
        row["kept"]["docs"] -= len(d["rows"])
        row["kept"]["chars"] -= d["chars"]
        row["bad_records"] += st["bad_records"]["count"]
        row["boilerplate_lines"] += st.get("boilerplate_lines", 0)
        row["shards"] += 1
        for key in ("documents", "tokens", "characters", "examples"):
            for s in SPLITS:
                row[key][s] += enc[key][s]
        t = tasks[k % cfg.engine.tasks]
        t["shards"] += 1
        t["read_docs"] += st["read"]["docs"]
        t["kept_docs"] += st["kept"]["docs"] - len(d["rows"])
        t["examples"] += enc["examples"]["train"] + enc["examples"]["validation"]
        t["tokens"] += enc["tokens"]["train"] + enc["tokens"]["validation"]
    return dict(sorted(langs.items())), tasks


def check_totals(langs: dict[str, dict[str, Any]], tasks: list[dict[str, Any]]) -> None:
    """The per-task totals add up to the per-language ones (the merge's own check)."""
    for key, lang_key in (("read_docs", ("read", "docs")), ("kept_docs", ("kept", "docs"))):
        a, b = sum(t[key] for t in tasks), sum(r[lang_key[0]][lang_key[1]] for r in langs.values())
        if a != b:
            raise ETLError(f"merge: per-task {key} sum to {a}, per-language to {b}")
    if not math.isclose(sum(t["examples"] for t in tasks),
                        sum(r["examples"]["train"] + r["examples"]["validation"] for r in langs.values())):
        raise ETLError("merge: per-task examples do not add up to the per-language ones")
