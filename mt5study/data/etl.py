"""The ETL: source → clean → split → tokenizer → tokenize → pack → span-corrupt → interleave → disk.

`run(params, out)` writes OUT/dataset (DatasetDict, splits train/validation, columns
input_ids/labels/lang), OUT/tokenizer (HF T5 tokenizer), OUT/documents.parquet and, last,
OUT/manifest.json. Everything is written into a hidden sibling folder that is renamed to OUT
at the end, so an interrupted run never leaves a folder that looks complete.

Streaming and sharding: each language is read and cleaned by its own worker into an Arrow
file (two passes, batch by batch); tokenisation and span corruption are batched
`datasets.map` calls with `num_proc` workers over memory-mapped Arrow; span corruption works
on units of `chunks_per_unit` examples, each with its own RNG stream, so the output does not
depend on num_proc.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from mt5study import records
from mt5study.data.clean import clean_documents
from mt5study.data.config import ETLConfig, ETLParams
from mt5study.data.corruption import pad_to, span_corrupt_batch, span_corruption_lengths
from mt5study.data.output import (
    LABEL_PAD, SPLITS, ETLError, check_target, content_hash, counts_padding, counts_total, document_ranges, is_complete,
    language_counts, move_into_place, remove_stale_temporaries, write_documents_table,
)
from mt5study.data.sampling import interleave, natural_shares, temperature_probs
from mt5study.data.sources import BadRecords, SourceError, make_source, stable_seed
from mt5study.data.tokenizer import (
    EOS_ID, PAD_ID, Encoder, check_t5_layout, load_tokenizer, make_tokenizer, sentinel_ids, tokenizer_hash,
)

log = logging.getLogger(__name__)

FORMAT = "mt5study-etl/1"


def run(params: ETLParams, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Run the whole ETL into `out`; returns the manifest (also OUT/manifest.json)."""
    if params.etl.engine.executor != "inline":  # sharded stages on datatrove (mt5study.data.engine)
        from mt5study.data.engine import run_sharded

        return run_sharded(params, out, overwrite)
    out = Path(out).resolve()
    check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with _quiet_datasets():
            manifest = build(params, tmp)
        check_target(out, overwrite)  # again: another process may have finished meanwhile
        move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def run_or_reuse(params: ETLParams, out: str | Path, overwrite: bool = False, keep_stale: bool = False) -> dict[str, Any]:
    """The manifest of a completed output made from the same params, source and ETL code;
    otherwise run the ETL again into `out`, saying why ("params changed", "code changed: ...").

    keep_stale: keep a completed output that does not match, on purpose (its reuse.json says so).
    """
    out = Path(out).resolve()
    if is_complete(out) and not overwrite:
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        reasons = stale_reasons(manifest, params)
        if records.reuse_or_redo(out, reasons, keep_stale, "ETL params, source and code match"):
            return manifest
        overwrite = True
    else:
        reasons = ["overwrite requested"] if is_complete(out) else ["no completed output"]
    manifest = run(params, out, overwrite=overwrite)
    records.record_decision(out, "built", reasons)
    return manifest


def etl_inputs(params: ETLParams) -> dict[str, Any]:
    """What an ETL output is made from besides its params: the source as listed (packages and
    page counts, files) and the ETL code's fingerprint (records.code_fingerprint('etl'))."""
    return {"source": make_source(params.etl.source).describe(), "code": records.code_fingerprint("etl")}


def stale_reasons(manifest: dict[str, Any], params: ETLParams) -> list[str]:
    """Why a completed output's manifest does not match these params, source and code ([] = it does)."""
    from mt5study.config import to_dict

    recorded = manifest.get("inputs")
    if manifest.get("params") != to_dict(params):
        diff = records.params_changes(manifest.get("params"), to_dict(params))
        return ["params changed: " + "; ".join(diff[:4]) + (f" (+{len(diff) - 4} more)" if len(diff) > 4 else "")]
    if not isinstance(recorded, dict):
        return ["no inputs in manifest.json: the output was made before outputs named their inputs"]
    now = etl_inputs(params)
    reasons = []
    if recorded.get("source") != now["source"]:
        diff = records.params_changes(recorded.get("source"), now["source"])
        reasons.append("source changed: " + "; ".join(diff[:3]))
    old_code = {"format": records.INPUTS_FORMAT, "code": recorded.get("code")}
    return reasons + records.inputs_changes(old_code, {"format": records.INPUTS_FORMAT, "code": now["code"]})


def provenance_note(manifest: dict[str, Any], out: str | Path) -> str:
    """One line of what the output is and was made with: its data sha (what training runs on it
    record), tokenizer sha, ETL code fingerprint and machine; led by a banner when kept stale."""
    code = (manifest.get("inputs") or {}).get("code") or {}
    line = (f"data {records.short(records.etl_data_sha(manifest))} | tokenizer "
            f"{records.short((manifest.get('tokenizer') or {}).get('sha256'))} | ETL code {records.short(code.get('sha256'))}"
            f" | machine {records.machine(manifest.get('environment') or {})}")
    stale = records.stale_mark(out)
    return (f"!!! STALE ETL OUTPUT KEPT ON PURPOSE (keep_stale): {stale}\n" if stale else "") + line


def build(params: ETLParams, folder: Path) -> dict[str, Any]:
    """All ETL stages into `folder` (run() gives it a temporary folder and renames it)."""
    from mt5study.config import to_dict
    from mt5study.records import environment, write_json_atomic

    cfg = params.etl
    t_start = time.perf_counter()
    timings: dict[str, float] = {}
    work = folder / "_work"
    work.mkdir()
    lap = _Lap(timings)

    source = make_source(cfg.source)
    langs = resolve_languages(cfg, source)
    source_record = source.describe()
    lap("list_source")

    stats = clean_all(cfg, langs, work / "clean")
    lap("clean")
    kept, dropped = check_languages(cfg, stats, source_record.get("files"))

    sizes = {lang: stats[lang]["kept"]["docs" if cfg.sampling.size_unit == "documents" else "chars"] for lang in kept}
    probs = temperature_probs(sizes, cfg.sampling.alpha, cfg.sampling.cap)
    docs, split_counts = split_documents(cfg, kept, work / "clean")
    doc_range = document_ranges(kept, split_counts)
    lap("split")

    tok_dir = folder / "tokenizer"
    tok_record = make_tokenizer(cfg, docs, doc_range, probs, tok_dir, work)
    tokenizer = load_tokenizer(tok_dir)
    check_t5_layout(tokenizer)
    sentinels = sentinel_ids(tokenizer)
    lap("tokenizer")

    raw_len, targets_len = span_corruption_lengths(
        cfg.corruption.inputs_length, cfg.corruption.noise_density, cfg.corruption.mean_noise_span_length
    )
    tokens = tokenize(docs, Encoder(str(tok_dir)), cfg.num_proc, work / "tokens" / "tokens.arrow")
    lap("tokenize")
    examples, ranges = corrupt(tokens, split_counts, kept, raw_len, cfg, sentinels, work / "examples" / "examples.arrow")
    lap("corrupt")

    dataset, per_split_probs = mix(examples, ranges, probs, cfg)
    dataset.save_to_disk(str(folder / "dataset"), max_shard_size=cfg.output.max_shard_size)
    lap("interleave_save")

    import datasets

    saved = datasets.load_from_disk(str(folder / "dataset"))
    counts = language_counts(stats, kept, split_counts, tokens, ranges, saved)
    if cfg.output.keep_documents:
        write_documents_table(tokens, split_counts, kept, folder / "documents.parquet")
    padded = {s: counts_padding(saved[s], targets_len) for s in SPLITS}
    content = {s: content_hash(saved[s]) for s in SPLITS}
    lap("hash")
    del tokens, examples, dataset, saved
    shutil.rmtree(work)

    manifest = {
        "format": FORMAT,
        "params": to_dict(params),
        "source": {**source_record, "bad_records": {k: stats[k]["bad_records"] for k in langs},
                   **({"catalog_counts": {k: stats[k]["catalogs"] for k in langs}} if cfg.source.catalogs else {})},
        "languages": kept,
        "dropped_languages": dropped,
        "size_unit": cfg.sampling.size_unit,
        "sizes": sizes,
        "natural_shares": natural_shares(sizes),
        "probabilities": probs,
        "split_probabilities": per_split_probs,
        "alpha": cfg.sampling.alpha,
        "cap": cfg.sampling.cap,
        "seed": cfg.seed,
        "stopping_strategy": cfg.sampling.stopping_strategy,
        "counts": counts,
        "inputs_length": cfg.corruption.inputs_length,
        "targets_length": targets_len,
        "raw_tokens_length": raw_len,
        "noise_density": cfg.corruption.noise_density,
        "mean_noise_span_length": cfg.corruption.mean_noise_span_length,
        "padded_examples": padded,
        "pad_id": PAD_ID,
        "label_pad_id": LABEL_PAD,
        "eos_id": EOS_ID,
        "vocab_size": len(tokenizer),
        "tokenizer": {**tok_record, "sha256": tokenizer_hash(tok_dir), "sentinel_ids": [sentinels[0], sentinels[-1]],
                      "extra_ids": len(sentinels)},
        "num_examples": {s: counts_total(counts, s) for s in SPLITS},
        "content_sha256": {**content, "clean": {lang: stats[lang]["sha256"] for lang in kept}},
        "timings_s": timings,
        "wall_time_s": round(time.perf_counter() - t_start, 2),
        "environment": environment(),
        "inputs": {"source": source_record, "code": records.code_fingerprint("etl")},  # what reuse compares
    }
    write_json_atomic(folder / "manifest.json", manifest)  # last: its presence marks completion
    return manifest


# ----------------------------------------------------------------------------- stages


def resolve_languages(cfg: ETLConfig, source) -> list[str]:
    """The languages to read: source.languages checked against what the source has, or all."""
    if cfg.source.kind == "mc4":
        return list(cfg.source.languages or [])
    found = source.languages()
    if cfg.source.languages is None:
        return found
    missing = [lang for lang in cfg.source.languages if lang not in found]
    if missing:
        raise SourceError(f"{cfg.source.kind} source: languages {missing} not found (found: {found})")
    return list(cfg.source.languages)


def _clean_worker(cfg: ETLConfig, lang: str, out_dir: Path) -> dict[str, Any]:
    source = make_source(cfg.source)
    bad = BadRecords(policy=cfg.source.on_bad_record)
    docs = ((d.id, d.text) for d in source.documents(lang, cfg.source.max_docs_per_language, cfg.seed, bad,
                                                                cfg.source.fraction))
    stats = clean_documents(docs, lang, cfg.cleaning, out_dir / f"{lang}.arrow", out_dir)
    stats["bad_records"] = {"count": bad.count, "messages": bad.messages}
    if hasattr(source, "catalogs"):  # source.catalogs: what each language's catalogs gave and left out
        stats["catalogs"] = dict(sorted(source.catalogs.counts.items()))
    return stats


def clean_all(cfg: ETLConfig, langs: list[str], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Clean every language into out_dir/<lang>.arrow, languages in parallel; per-language counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.num_proc > 1 and len(langs) > 1:
        # spawn, not fork: the parent may hold threads (tokenizers, torch) that fork would copy
        pool = ProcessPoolExecutor(min(cfg.num_proc, len(langs)), mp_context=get_context("spawn"))
        try:
            futures = {lang: pool.submit(_clean_worker, cfg, lang, out_dir) for lang in langs}
            stats = {lang: f.result() for lang, f in futures.items()}
        finally:  # on an error, languages not started yet are not read at all
            pool.shutdown(wait=True, cancel_futures=True)
    else:
        stats = {lang: _clean_worker(cfg, lang, out_dir) for lang in langs}
    for lang, s in stats.items():
        bad = s["bad_records"]
        if bad["count"]:
            warnings.warn(f"{lang}: skipped {bad['count']} bad records; first: " + "; ".join(bad["messages"][:3]),
                          stacklevel=2)
    return stats


def check_languages(cfg: ETLConfig, stats: dict[str, dict[str, Any]],
                    files: dict[str, list[str]] | None = None) -> tuple[list[str], dict[str, str]]:
    """Languages with documents left; an emptied one is an error or a warned drop (by param).
    `files` (language -> source files) lets the message name the files of an empty language."""
    if not any(s["read"]["docs"] for s in stats.values()):
        raise SourceError(f"{cfg.source.kind} source: no documents at all for languages {sorted(stats)}")
    kept, dropped = [], {}
    for lang, s in sorted(stats.items()):
        if s["kept"]["docs"] > 0:
            kept.append(lang)
            continue
        why = ", ".join(f"{f} {s[f]['docs']}" for f in ("min_length", "duplicate", "langid") if s[f]["docs"])
        reason = (f"language {lang}: no documents left after cleaning (read {s['read']['docs']}"
                  + (f"; dropped by {why}" if why else "") + ")")
        if s["read"]["docs"] == 0:
            where = f" in {', '.join(files[lang])}" if files and files.get(lang) else ""
            reason = f"language {lang}: the source has no documents{where}"
        if cfg.cleaning.on_empty_language == "error":
            raise ETLError(reason + "; set cleaning.on_empty_language: drop to continue without it")
        warnings.warn(reason + ": dropped", stacklevel=2)
        dropped[lang] = reason
    if not kept:
        raise ETLError("no language has documents left after cleaning")
    return kept, dropped


def split_documents(cfg: ETLConfig, langs: list[str], clean_dir: Path):
    """One Dataset of documents ordered (lang, split) and the documents per (lang, split)."""
    import datasets

    parts, counts = [], {}
    for lang in langs:
        ds = datasets.Dataset.from_file(str(clean_dir / f"{lang}.arrow"))
        n = len(ds)
        n_val = max(1, round(cfg.output.validation_fraction * n)) if cfg.output.validation_fraction > 0 and n >= 2 else 0
        rng = np.random.default_rng([cfg.seed, stable_seed(lang), 1])
        is_val = np.zeros(n, dtype=bool)
        is_val[rng.choice(n, size=n_val, replace=False)] = True
        parts += [ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))]
        counts[lang] = {"train": int(n - n_val), "validation": int(n_val)}
    return datasets.concatenate_datasets(parts), counts


def _tokenize_batch(batch: dict[str, list], encoder: Encoder) -> dict[str, list]:
    ids = encoder.encode(batch["text"])
    return {
        "ids": [x + [EOS_ID] for x in ids],  # EOS ends each document: packed documents stay apart
        "n_tokens": [len(x) + 1 for x in ids],
        "chars": [len(t) for t in batch["text"]],
    }


def tokenize(docs, encoder: Encoder, num_proc: int, cache_file: Path):
    """Token ids of every document (EOS appended), batched datasets.map over num_proc workers."""
    import datasets

    cache_file.parent.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({
        "id": datasets.Value("string"), "lang": datasets.Value("string"),
        "ids": datasets.List(datasets.Value("int32")), "n_tokens": datasets.Value("int64"),
        "chars": datasets.Value("int64"),
    })
    return docs.map(
        _tokenize_batch, batched=True, batch_size=256, remove_columns=["text"], features=features,
        fn_kwargs={"encoder": encoder}, num_proc=num_proc if num_proc > 1 and len(docs) > 1 else None,
        cache_file_name=str(cache_file), desc="tokenize",
    )


_FLAT: dict[tuple[str, ...], Any] = {}


def _flat_tokens(files: tuple[str, ...]):
    """All documents' tokens as one memory-mapped pyarrow array (cached per worker process)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if files not in _FLAT:
        chunks = []
        for f in files:  # the maps stay open: the arrays point into them
            chunks += [pc.list_flatten(b.column("ids")) for b in pa.ipc.open_stream(pa.memory_map(f))]
        _FLAT.clear()
        _FLAT[files] = pa.chunked_array(chunks, type=pa.int32())
    return _FLAT[files]


def _corrupt_units(units: dict[str, list], token_files: tuple[str, ...], raw_len: int, noise_density: float,
                   mean_span: float, sentinels: list[int], inputs_len: int, targets_len: int, seed: int) -> dict:
    flat = _flat_tokens(token_files)
    inputs, labels, langs = [], [], []
    for lang, start, chunks, unit in zip(units["lang"], units["start"], units["chunks"], units["unit"]):
        tokens = flat.slice(start, chunks * raw_len).to_numpy().reshape(chunks, raw_len)
        rng = np.random.default_rng([seed, stable_seed(lang), unit])  # one stream per unit
        x, y = span_corrupt_batch(tokens, noise_density, mean_span, sentinels, rng, EOS_ID)
        inputs.append(pad_to(x, inputs_len, PAD_ID))
        labels.append(pad_to(y, targets_len, LABEL_PAD))
        langs += [lang] * chunks
    return {"input_ids": np.concatenate(inputs), "labels": np.concatenate(labels), "lang": langs}


def corrupt(tokens, split_counts, langs: list[str], raw_len: int, cfg: ETLConfig, sentinels: list[int],
            cache_file: Path):
    """Pack each (language, split) token stream into raw_len chunks and span-corrupt them.

    Returns the examples ordered (split, language) and the [start, stop) rows of each."""
    import datasets

    n_tokens = tokens.with_format("arrow")["n_tokens"].to_numpy()
    offsets = np.concatenate([[0], np.cumsum(n_tokens)])
    doc_range = document_ranges(langs, split_counts)
    rows: dict[str, list] = {"lang": [], "start": [], "chunks": [], "unit": []}
    ranges, first = {}, 0
    for split in SPLITS:
        for lang in langs:
            a, b = doc_range[(lang, split)]
            tok_a, tok_b = int(offsets[a]), int(offsets[b])
            n_chunks = (tok_b - tok_a) // raw_len  # the last partial chunk is dropped: no padding
            ranges[(split, lang)] = (first, first + n_chunks)
            first += n_chunks
            for k, c0 in enumerate(range(0, n_chunks, cfg.corruption.chunks_per_unit)):
                c = min(cfg.corruption.chunks_per_unit, n_chunks - c0)
                rows["lang"].append(lang)
                rows["start"].append(tok_a + c0 * raw_len)
                rows["chunks"].append(c)
                rows["unit"].append(k * 2 + (split == "validation"))  # distinct streams per split
    if first == 0:
        raise ETLError(f"no examples: every language has fewer than {raw_len} tokens (raw_tokens_length)")
    targets_len = span_corruption_lengths(cfg.corruption.inputs_length, cfg.corruption.noise_density,
                                          cfg.corruption.mean_noise_span_length)[1]
    features = datasets.Features({
        "input_ids": datasets.List(datasets.Value("int32")), "labels": datasets.List(datasets.Value("int32")),
        "lang": datasets.Value("string"),
    })
    units = datasets.Dataset.from_dict(rows)
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    examples = units.map(
        _corrupt_units, batched=True, batch_size=1, remove_columns=list(rows), features=features,
        num_proc=cfg.num_proc if cfg.num_proc > 1 and len(units) > 1 else None, cache_file_name=str(cache_file),
        fn_kwargs={
            "token_files": tuple(f["filename"] for f in tokens.cache_files), "raw_len": raw_len,
            "noise_density": cfg.corruption.noise_density, "mean_span": cfg.corruption.mean_noise_span_length,
            "sentinels": sentinels, "inputs_len": cfg.corruption.inputs_length, "targets_len": targets_len,
            "seed": cfg.seed,
        },
        desc="pack and span-corrupt",
    )
    return examples, ranges


def mix(examples, ranges, probs: dict[str, float], cfg: ETLConfig):
    """Interleave each split's languages with the sampling probabilities: a DatasetDict."""
    import datasets

    out, used = {}, {}
    for split in SPLITS:
        per_lang = {lang: examples.select(range(a, b)) for (s, lang), (a, b) in ranges.items() if s == split and b > a}
        missing = sorted(lang for (s, lang), (a, b) in ranges.items() if s == split and b == a)
        if missing and (split == "train" or cfg.output.validation_fraction > 0):
            warnings.warn(f"{split}: no examples for {missing} (fewer tokens than one chunk); "
                          "sampled without them", stacklevel=2)
        if not per_lang:
            if split == "train":
                raise ETLError("no training examples")
            out[split], used[split] = examples.select([]), {}
            continue
        ds = interleave(per_lang, probs, cfg.seed + (split == "validation"), cfg.sampling.stopping_strategy)
        limit = cfg.output.max_train_examples if split == "train" else cfg.output.max_validation_examples
        if limit is not None and len(ds) > limit:
            ds = ds.select(range(limit))
        total = sum(probs[lang] for lang in per_lang)
        out[split], used[split] = ds, {lang: probs[lang] / total for lang in sorted(per_lang)}
    return datasets.DatasetDict(out), used


@contextlib.contextmanager
def _quiet_datasets():
    import datasets

    enabled = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        if enabled:
            datasets.enable_progress_bars()


class _Lap:
    """Seconds spent in each stage, for the manifest."""

    def __init__(self, timings: dict[str, float]):
        self.timings, self.t = timings, time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.timings[name] = round(now - self.t, 2)
        log.info("etl: %s took %.1f s", name, now - self.t)
        self.t = now
