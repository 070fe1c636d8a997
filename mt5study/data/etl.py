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
import hashlib
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

from mt5study.data.clean import clean_documents
from mt5study.data.config import ETLConfig, ETLParams
from mt5study.data.corruption import pad_to, span_corrupt_batch, span_corruption_lengths
from mt5study.data.sampling import interleave, natural_shares, temperature_probs
from mt5study.data.sources import BadRecords, SourceError, _stable_int, make_source
from mt5study.data.tokenizer import (
    EOS_ID, PAD_ID, Encoder, check_t5_layout, load_tokenizer, save_t5_tokenizer, sentinel_ids,
    tokenizer_hash, train_sentencepiece,
)

log = logging.getLogger(__name__)

FORMAT = "mt5study-etl/1"
LABEL_PAD = -100  # ignored by the loss; only used if an example is ever shorter than targets_length
SPLITS = ("train", "validation")


class ETLError(RuntimeError):
    """The ETL cannot produce a dataset (empty language, occupied output folder, ...)."""


def run(params: ETLParams, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Run the whole ETL into `out`; returns the manifest (also OUT/manifest.json)."""
    out = Path(out).resolve()
    _check_target(out, overwrite)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        with _quiet_datasets():
            manifest = build(params, tmp)
        _check_target(out, overwrite)  # again: another process may have finished meanwhile
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


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
    kept, dropped = check_languages(cfg, stats)

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
    padded = {s: int(counts_padding(saved[s], cfg.corruption.inputs_length, targets_len)) for s in SPLITS}
    content = {s: content_hash(saved[s]) for s in SPLITS}
    lap("hash")
    del tokens, examples, dataset, saved
    shutil.rmtree(work)

    manifest = {
        "format": FORMAT,
        "params": to_dict(params),
        "source": {**source_record, "bad_records": {k: stats[k]["bad_records"] for k in langs}},
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
    docs = ((d.id, d.text) for d in source.documents(lang, cfg.source.max_docs_per_language, cfg.seed, bad))
    stats = clean_documents(docs, lang, cfg.cleaning, out_dir / f"{lang}.arrow", out_dir)
    stats["bad_records"] = {"count": bad.count, "messages": bad.messages}
    return stats


def clean_all(cfg: ETLConfig, langs: list[str], out_dir: Path) -> dict[str, dict[str, Any]]:
    """Clean every language into out_dir/<lang>.arrow, languages in parallel; per-language counts."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if cfg.num_proc > 1 and len(langs) > 1:
        with ProcessPoolExecutor(min(cfg.num_proc, len(langs)), mp_context=get_context("spawn")) as pool:
            futures = {lang: pool.submit(_clean_worker, cfg, lang, out_dir) for lang in langs}
            stats = {lang: f.result() for lang, f in futures.items()}
    else:
        stats = {lang: _clean_worker(cfg, lang, out_dir) for lang in langs}
    for lang, s in stats.items():
        bad = s["bad_records"]
        if bad["count"]:
            warnings.warn(f"{lang}: skipped {bad['count']} bad records; first: " + "; ".join(bad["messages"][:3]),
                          stacklevel=2)
    return stats


def check_languages(cfg: ETLConfig, stats: dict[str, dict[str, Any]]) -> tuple[list[str], dict[str, str]]:
    """Languages with documents left; an emptied one is an error or a warned drop (by param)."""
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
        rng = np.random.default_rng([cfg.seed, _stable_int(lang), 1])
        is_val = np.zeros(n, dtype=bool)
        is_val[rng.choice(n, size=n_val, replace=False)] = True
        parts += [ds.select(np.flatnonzero(~is_val)), ds.select(np.flatnonzero(is_val))]
        counts[lang] = {"train": int(n - n_val), "validation": int(n_val)}
    return datasets.concatenate_datasets(parts), counts


def document_ranges(langs: list[str], split_counts: dict[str, dict[str, int]]) -> dict[tuple[str, str], tuple[int, int]]:
    """[start, stop) rows of each (language, split) in the documents ordered by split_documents."""
    ranges, start = {}, 0
    for lang in langs:
        for split in SPLITS:
            n = split_counts[lang][split]
            ranges[(lang, split)] = (start, start + n)
            start += n
    return ranges


def make_tokenizer(cfg: ETLConfig, docs, doc_range, probs: dict[str, float], out_dir: Path, work: Path) -> dict[str, Any]:
    """Train SentencePiece on a temperature-balanced sample of training documents, or copy a
    released tokenizer; either way saved as a HF tokenizer in out_dir."""
    tc = cfg.tokenizer
    if tc.pretrained is not None:
        tok = load_tokenizer(tc.pretrained)
        tok.save_pretrained(str(out_dir))
        return {"kind": "pretrained", "name": tc.pretrained}
    sample_file = work / "tokenizer_sample.txt"
    chars = write_tokenizer_sample(docs, doc_range, probs, tc.sample_chars, tc.max_sentence_chars, cfg.seed, sample_file)
    model = train_sentencepiece(
        sample_file, work / "spiece", tc.vocab_size - tc.extra_ids, tc.character_coverage, tc.normalization_rule,
        num_threads=cfg.num_proc, seed=cfg.seed, max_sentence_chars=tc.max_sentence_chars,
    )
    tok = save_t5_tokenizer(model, out_dir, tc.extra_ids)
    if len(tok) < tc.vocab_size:
        warnings.warn(f"tokenizer: the sample supports {len(tok)} of the {tc.vocab_size} tokens asked for",
                      stacklevel=2)
    return {"kind": "trained", "model_type": "unigram", "byte_fallback": True, "sample_chars": chars}


def write_tokenizer_sample(docs, doc_range, probs: dict[str, float], total_chars: int, max_line: int, seed: int,
                           path: Path) -> dict[str, int]:
    """Lines of training documents, p_l * total_chars characters per language (all of a
    language's text where it has less), documents in seeded random order; chars per language."""
    taken: dict[str, int] = {}
    with open(path, "w", encoding="utf-8") as f:
        for lang, p in sorted(probs.items()):
            a, b = doc_range[(lang, "train")]
            order = a + np.random.default_rng([seed, _stable_int(lang), 2]).permutation(b - a)
            budget, used = p * total_chars, 0
            for start in range(0, len(order), 256):
                if used >= budget:
                    break
                for text in docs.select(order[start:start + 256])["text"]:
                    for line in text.split("\n"):
                        line = line.strip()[:max_line]
                        if line and used < budget:
                            f.write(line + "\n")
                            used += len(line)
            taken[lang] = used
    return taken


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
        rng = np.random.default_rng([seed, _stable_int(lang), unit])  # one stream per unit
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


# ----------------------------------------------------------------------------- records


def language_counts(stats, langs, split_counts, tokens, ranges, saved) -> dict[str, dict[str, Any]]:
    """Per-language counts: read, each filter, kept, split, tokens, examples, sampled."""
    table = tokens.with_format("arrow")
    lang_col = np.asarray(table["lang"].to_numpy(zero_copy_only=False))
    n_tok = table["n_tokens"].to_numpy()
    n_chr = table["chars"].to_numpy()
    doc_range = document_ranges(langs, split_counts)
    sampled = {s: _value_counts(saved[s].with_format("arrow")["lang"]) if len(saved[s]) else {} for s in SPLITS}
    out = {}
    for lang, s in stats.items():
        row = {k: v for k, v in s.items() if k not in ("bad_records", "sha256")}
        if lang in langs:
            row["documents"] = split_counts[lang]
            row["tokens"] = {sp: int(n_tok[slice(*doc_range[(lang, sp)])].sum()) for sp in SPLITS}
            row["characters"] = {sp: int(n_chr[slice(*doc_range[(lang, sp)])].sum()) for sp in SPLITS}
            row["examples"] = {sp: ranges[(sp, lang)][1] - ranges[(sp, lang)][0] for sp in SPLITS}
            row["sampled"] = {sp: int(sampled[sp].get(lang, 0)) for sp in SPLITS}
        out[lang] = row
    assert (lang_col.size == 0) or set(np.unique(lang_col)) <= set(langs)
    return out


def _value_counts(column) -> dict[str, int]:
    values, counts = np.unique(np.asarray(column.to_numpy(zero_copy_only=False), dtype=object), return_counts=True)
    return dict(zip(values.tolist(), counts.tolist()))


def counts_total(counts, split: str) -> int:
    return int(sum(c.get("sampled", {}).get(split, 0) for c in counts.values()))


def counts_padding(ds, inputs_len: int, targets_len: int) -> int:
    """Examples with any padding (0 at T5's lengths; kept in the manifest as a check)."""
    if len(ds) == 0:
        return 0
    t = ds.with_format("arrow")
    import pyarrow.compute as pc

    labels = pc.list_flatten(t["labels"]).to_numpy().reshape(-1, targets_len)
    return int((labels == LABEL_PAD).any(axis=1).sum())


def content_hash(ds) -> str:
    """sha256 of a split's input_ids, labels and lang, in order (independent of file layout)."""
    import pyarrow.compute as pc

    h = hashlib.sha256()
    for batch in ds.with_format("arrow").iter(batch_size=8192):
        h.update(pc.list_flatten(batch["input_ids"]).to_numpy().astype("<i4").tobytes())
        h.update(pc.list_flatten(batch["labels"]).to_numpy().astype("<i4").tobytes())
        h.update("\n".join(batch["lang"].to_pylist()).encode("utf-8"))
    return h.hexdigest()


def write_documents_table(tokens, split_counts, langs, path: Path) -> None:
    """documents.parquet: id, lang, split, chars and tokens (EOS included) of every document."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = tokens.with_format("arrow")[:]  # a pyarrow Table of all rows
    split = np.empty(len(t), dtype=object)
    for (lang, sp), (a, b) in document_ranges(langs, split_counts).items():
        split[a:b] = sp
    table = pa.table({"id": t["id"], "lang": t["lang"], "split": pa.array(split.tolist(), pa.string()),
                      "chars": t["chars"], "tokens": t["n_tokens"]})
    pq.write_table(table, path)


# ----------------------------------------------------------------------------- output folder


def is_complete(folder: Path) -> bool:
    """An ETL output is complete when its manifest.json exists (written last)."""
    return (Path(folder) / "manifest.json").is_file()


def _check_target(out: Path, overwrite: bool) -> None:
    if not out.exists() or overwrite:
        return
    if is_complete(out):
        raise ETLError(f"{out} already holds a completed ETL output (manifest.json); "
                       "pass overwrite=True (CLI: --overwrite) to replace it")
    if not out.is_dir() or any(out.iterdir()):
        raise ETLError(f"{out} exists and is not an empty folder; refusing to write the ETL output there")


def _remove_stale_temporaries(out: Path) -> None:
    """Temporary folders of runs that were killed (their process is gone)."""
    for p in out.parent.glob(f".{out.name}.tmp-*"):
        try:
            pid = int(p.name.rsplit(".tmp-", 1)[1].split("-")[0])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(p, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename tmp to out; an existing out (overwrite) is moved aside first, then deleted."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(out, old)
    os.replace(tmp, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


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
        self.t = now
