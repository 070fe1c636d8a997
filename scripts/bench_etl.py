"""Benchmark of the ETL on this machine (prints and writes JSON; not a timed test).

1. Throughput: raw text (MB of UTF-8 per second) through clean → tokenize → pack → corrupt with
   `--num-proc` workers (default: all cores), on rendered manual pages where installed, else on
   the generated sample corpus. Rendering and tokenizer training are one-off costs, timed apart.
2. Sharded (datatrove local executor): tokens per second per task and scaling efficiency at
   `--tasks` (default 1 and 2) on the same corpus, and whether the outputs are identical.
3. span_corrupt: examples per second of the vectorised NumPy implementation against a
   straightforward per-example Python implementation kept below.

    python scripts/bench_etl.py [--pages-per-language 80] [--tasks 1 2] [--sharded-only] [--out outputs/bench/etl.json]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from mt5study.config import validate
from mt5study.data import etl
from mt5study.data.corruption import span_corrupt_batch, span_corruption_lengths
from mt5study.data.tokenizer import Encoder
from mt5study.paths import OUTPUTS
from mt5study.records import environment, write_json_atomic


def naive_span_corrupt(tokens: list[int], density: float, mean_span: float, sentinels: list[int],
                       rng: random.Random, eos: int = 1) -> tuple[list[int], list[int]]:
    """The obvious per-example version: draw span lengths, then walk the tokens in Python."""
    n = len(tokens)
    num_noise = min(max(round(n * density), 1), n - 1)
    num_spans = max(round(num_noise / mean_span), 1)

    def lengths(items: int, parts: int) -> list[int]:
        bounds = [0, *sorted(rng.sample(range(1, items), parts - 1)), items]
        return [b - a for a, b in zip(bounds, bounds[1:])]

    noise, keep = lengths(num_noise, num_spans), lengths(n - num_noise, num_spans)
    inputs, targets, pos = [], [], 0
    for k in range(num_spans):
        inputs += tokens[pos:pos + keep[k]]
        pos += keep[k]
        inputs.append(sentinels[k])
        targets.append(sentinels[k])
        targets += tokens[pos:pos + noise[k]]
        pos += noise[k]
    return inputs + [eos], targets + [eos]


def bench_span_corrupt(inputs_length: int = 512, examples: int = 20000) -> dict:
    raw, targets = span_corruption_lengths(inputs_length)
    sentinels = list(range(250099, 249999, -1))
    tokens = np.random.default_rng(0).integers(3, 250000, size=(examples, raw), dtype=np.int32)
    t = time.perf_counter()
    for start in range(0, examples, 2048):  # the ETL's unit size
        span_corrupt_batch(tokens[start:start + 2048], 0.15, 3.0, sentinels, np.random.default_rng(start))
    vec = examples / (time.perf_counter() - t)
    rows = tokens[: examples // 10].tolist()
    rng = random.Random(0)
    t = time.perf_counter()
    for row in rows:
        naive_span_corrupt(row, 0.15, 3.0, sentinels, rng)
    naive = len(rows) / (time.perf_counter() - t)
    return {"inputs_length": inputs_length, "raw_tokens_length": raw, "targets_length": targets,
            "vectorised_examples_per_s": round(vec), "python_examples_per_s": round(naive),
            "speedup": round(vec / naive, 1)}


def _render(args: tuple[str, list[str]]) -> tuple[str, list[str]]:
    from mt5study.data.sources import render_manpage

    lang, files = args
    return lang, [t for t in (render_manpage(f) for f in files) if t]


def corpus(folder: Path, pages: int, num_proc: int) -> tuple[str, dict[str, int], float]:
    """Write <lang>.jsonl files to benchmark on; returns the corpus kind, documents, seconds."""
    from mt5study.data.config import ManpagesSource
    from mt5study.data.sources import ManpagesReader, SourceError, stable_seed

    t = time.perf_counter()
    try:
        reader = ManpagesReader(ManpagesSource())
        files = reader._page_files()
        jobs = []
        for lang, paths in sorted(files.items()):
            rng = np.random.default_rng([0, stable_seed(lang)])
            jobs.append((lang, [paths[i] for i in sorted(rng.permutation(len(paths))[:pages])]))
        with ProcessPoolExecutor(num_proc) as pool:
            texts = dict(pool.map(_render, jobs))
        kind = "manpages"
    except SourceError:
        from mt5study.data.samples import SENTENCES, make_documents

        texts = {lang: make_documents(lang, pages * 10) for lang in SENTENCES}
        kind = "samples"
    for lang, docs in texts.items():
        with open(folder / f"{lang}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in docs)
    return kind, {k: len(v) for k, v in texts.items()}, time.perf_counter() - t


def bench_pipeline(pages: int, num_proc: int, inputs_length: int, vocab: int) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="bench_etl_"))
    try:
        data = tmp / "corpus"
        data.mkdir()
        kind, docs, render_s = corpus(data, pages, num_proc)
        raw_bytes = sum(len(json.loads(line)["text"].encode("utf-8"))
                        for p in data.iterdir() for line in p.open(encoding="utf-8"))
        params = validate({"etl": {
            "num_proc": num_proc,
            "source": {"kind": "files", "files": {"path": str(data)}},
            "cleaning": {"on_empty_language": "drop"},
            "tokenizer": {"vocab_size": vocab, "sample_chars": 1_000_000},
            "corruption": {"inputs_length": inputs_length},
        }}, "bench")
        cfg = params.etl
        work = tmp / "work"
        work.mkdir()
        times = {}
        t = time.perf_counter()
        stats = etl.clean_all(cfg, sorted(docs), work / "clean")
        times["clean"] = time.perf_counter() - t
        kept, _ = etl.check_languages(cfg, stats)
        sizes = {lang: stats[lang]["kept"]["docs"] for lang in kept}
        probs = etl.temperature_probs(sizes, cfg.sampling.alpha)
        all_docs, split_counts = etl.split_documents(cfg, kept, work / "clean")
        t = time.perf_counter()
        etl.make_tokenizer(cfg, all_docs, etl.document_ranges(kept, split_counts), probs, tmp / "tok", work)
        tokenizer_s = time.perf_counter() - t
        from mt5study.data.tokenizer import load_tokenizer, sentinel_ids

        sentinels = sentinel_ids(load_tokenizer(tmp / "tok"))
        t = time.perf_counter()
        tokens = etl.tokenize(all_docs, Encoder(str(tmp / "tok")), num_proc, work / "tokens" / "tokens.arrow")
        times["tokenize"] = time.perf_counter() - t
        raw_len, _ = span_corruption_lengths(inputs_length)
        t = time.perf_counter()
        examples, _ = etl.corrupt(tokens, split_counts, kept, raw_len, cfg, sentinels, work / "ex" / "ex.arrow")
        times["pack_corrupt"] = time.perf_counter() - t
        total = sum(times.values())
        mb = raw_bytes / 1e6
        return {
            "corpus": kind, "documents": sum(docs.values()), "languages": len(docs), "raw_text_mb": round(mb, 2),
            "tokens": int(sum(tokens.with_format("arrow")["n_tokens"].to_numpy())), "examples": len(examples),
            "num_proc": num_proc, "inputs_length": inputs_length, "vocab_size": vocab,
            "seconds": {k: round(v, 2) for k, v in times.items()}, "total_s": round(total, 2),
            "mb_per_s": round(mb / total, 2),
            "stage_mb_per_s": {k: round(mb / v, 2) for k, v in times.items()},
            "one_off_s": {"render_or_generate": round(render_s, 2), "tokenizer_training": round(tokenizer_s, 2)},
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_sharded(pages: int, tasks: tuple[int, ...], inputs_length: int, vocab: int) -> dict:
    """The sharded ETL (datatrove's local executor) on the same corpus at each task count:
    wall seconds per stage, tokens per second per task over the task-parallel stages (clean,
    dedup, encode), and scaling efficiency against one task: T_1 / (n * T_n)."""
    from mt5study.data.engine import task_seconds

    tmp = Path(tempfile.mkdtemp(prefix="bench_etl_sharded_"))
    try:
        data = tmp / "corpus"
        data.mkdir()
        kind, docs, _ = corpus(data, pages, max(tasks))
        runs = []
        for n in tasks:
            params = validate({"etl": {
                "source": {"kind": "files", "files": {"path": str(data)}},
                "cleaning": {"on_empty_language": "drop"},
                "tokenizer": {"vocab_size": vocab, "sample_chars": 1_000_000},
                "corruption": {"inputs_length": inputs_length},
                "engine": {"executor": "local", "tasks": n, "workers": n, "dedup_buckets": n},
            }}, "bench")
            out = tmp / f"out{n}"
            t = time.perf_counter()
            manifest = etl.run(params, out)
            wall = time.perf_counter() - t
            stages = json.loads((out / "_engine" / "timings.json").read_text())
            parallel = sum(stages[f"{s}_s"] for s in ("clean", "dedup", "encode"))
            tokens = sum(r["tokens"] for r in manifest["per_task"])
            busy = sum(sum(task_seconds(out, s).values()) for s in ("clean", "encode"))
            clean_bytes = sum(p.stat().st_size for p in (out / "_engine" / "clean").glob("*.arrow"))
            runs.append({
                "tasks": n, "shards": len(manifest["shards"]), "tokens": tokens,
                "examples": sum(manifest["num_examples"].values()), "wall_s": round(wall, 2),
                "stage_wall_s": {k: v for k, v in stages.items() if k != "wall_time_s"},
                "parallel_stages_s": round(parallel, 2),
                "tokens_per_s_per_task": round(tokens / parallel / n, 1),
                "tokens_per_busy_task_s": round(tokens / busy, 1) if busy else None,
                "clean_bytes_per_token": round(clean_bytes / tokens, 3),
                "content_sha256": manifest["content_sha256"],
            })
        base = runs[0]["parallel_stages_s"]
        for r in runs:
            r["efficiency"] = round(base / (r["tasks"] / runs[0]["tasks"] * r["parallel_stages_s"]), 3)
        same = len({json.dumps(r["content_sha256"]) for r in runs}) == 1
        return {"corpus": kind, "documents": sum(docs.values()), "languages": len(docs), "runs": runs,
                "same_output_at_every_task_count": same, "cpus": os.cpu_count(),
                "stream": bench_stream(tmp / f"out{tasks[-1]}", inputs_length),
                "load_average": list(os.getloadavg()),
                "note": "efficiency over the task-parallel stages (clean, dedup, encode)"}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_stream(out: Path, inputs_length: int, micro_batch: int = 16, batches: int = 400) -> dict:
    """What the trainer's read of the sharded output costs per micro-batch (memory-mapped shards,
    temperature mixture computed on the fly), in the loop's own process: the time a step waits for
    data when no DataLoader worker reads ahead (num_workers 0, the CPU default)."""
    from mt5study import batches as batches_lib
    from mt5study.config import DataConfig, RunConfig

    manifest = json.loads((out / "manifest.json").read_text())
    data = DataConfig(path=str(out), input_length=inputs_length, target_length=manifest["targets_length"])
    t = time.perf_counter()
    train = batches_lib.load_splits(data, seed=0)["train"]
    open_s = time.perf_counter() - t
    run = RunConfig(steps=batches, micro_batch=micro_batch, grad_accum=1, global_batch=micro_batch)
    stream = batches_lib.MicroBatches(train, run, 0, 1, 0, 0)
    stream[0]  # the first read opens the shards it needs
    t = time.perf_counter()
    for k in range(1, batches):
        stream[k]
    per_batch = (time.perf_counter() - t) / (batches - 1)
    return {"micro_batch": micro_batch, "batches": batches, "open_s": round(open_s, 4),
            "ms_per_micro_batch": round(per_batch * 1e3, 3),
            "examples_per_s": round(micro_batch / per_batch, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pages-per-language", type=int, default=80, help="manual pages rendered per language")
    ap.add_argument("--num-proc", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--inputs-length", type=int, default=64)
    ap.add_argument("--vocab-size", type=int, default=8000)
    ap.add_argument("--tasks", type=int, nargs="+", default=[1, 2], help="task counts of the sharded ETL")
    ap.add_argument("--sharded-only", action="store_true", help="only the sharded ETL's scaling")
    ap.add_argument("--out", type=Path, default=OUTPUTS / "bench" / "etl.json")
    a = ap.parse_args(argv)
    result = {"sharded": bench_sharded(a.pages_per_language, tuple(a.tasks), a.inputs_length, a.vocab_size)}
    if not a.sharded_only:
        result["pipeline"] = bench_pipeline(a.pages_per_language, a.num_proc, a.inputs_length, a.vocab_size)
        result["span_corrupt"] = bench_span_corrupt()
    result["environment"] = environment()
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))
    write_json_atomic(a.out, result)
    print(f"wrote {a.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
