"""Parallel records -> filtered, split, balanced text-to-text examples for the trainer.

Per pair, in order, each drop counted in manifest.json: empty or letterless strings, strings
outside [min_chars, max_chars], exact duplicates, pairs whose prefixed source or target does not
fit the encoder/decoder lengths, and pairs whose token lengths differ by more than
`max_token_ratio` (misaligned or truncated translations).

Splits are drawn from a seeded hash of the pair's English string (`key`): one msgid, in any
pair or direction, is in one split only, so no held-out string was seen in training, not even
translated into another language. Held-out splits keep one target per source (others counted as
`alternative_targets`); caps take a seeded sample. A pair left with no data, or an empty split,
is a PairError naming the pair and what was counted: never a silent empty split.

The training set interleaves the pairs with the ETL's temperature sampling (p ∝ n^alpha,
mt5study.data.sampling): small pairs are repeated until every pair is used once.

Folder (manifest.json written last):

    examples/{train,validation,test}.jsonl  the kept pairs (source, target, key, origin)
    dataset/                                DatasetDict train/validation: input_ids, labels (trainer)
    manifest.json                           counts per pair and filter, split sizes, shares, sources
"""

from __future__ import annotations

import hashlib
import json
import shutil
import zlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from mt5study import records as records_lib
from mt5study.qa.prepare import EOS_ID, IGNORE, PAD_ID, Tokenizer, _pad
from mt5study.translation.catalogs import has_letters
from mt5study.translation.config import TranslationConfig, parse_pair, task_prefix

FORMAT = "mt5study-translation/1"
SPLITS = ("train", "validation", "test")


class PairError(ValueError):
    """A pair without data, or with an empty split after filtering."""


def split_of(key: str, seed: int, validation_fraction: float, test_fraction: float) -> str:
    """test, validation or train from a seeded hash of the English string."""
    u = zlib.crc32(f"{seed}:split:{key}".encode()) / 2**32
    return "test" if u < test_fraction else "validation" if u < test_fraction + validation_fraction else "train"


def _order(seed: int, text: str) -> int:
    return zlib.crc32(f"{seed}:order:{text}".encode())


def filter_pair(recs: list[dict[str, Any]], cfg: TranslationConfig, tok: Tokenizer, counts: Counter) -> list[dict[str, Any]]:
    """The records of one pair that pass every filter, with their token ids."""
    f = cfg.filters
    seen: set[tuple[str, str]] = set()
    kept = []
    for r in recs:
        counts["read"] += 1
        s, t = " ".join(r["source"].split()), " ".join(r["target"].split())
        if not s or not t:
            counts["empty"] += 1
            continue
        if f.require_letters and not (has_letters(s) and has_letters(t)):
            counts["no_letters"] += 1
            continue
        if min(len(s), len(t)) < f.min_chars:
            counts["too_short"] += 1
            continue
        if max(len(s), len(t)) > f.max_chars:
            counts["too_long_chars"] += 1
            continue
        if (s, t) in seen:
            counts["duplicate"] += 1
            continue
        seen.add((s, t))
        src_ids, tgt_ids = tok.encode(s), tok.encode(t)
        input_ids = tok.encode(task_prefix(r["src_lang"], r["tgt_lang"]) + s) + [EOS_ID]
        if len(input_ids) > cfg.input_length:
            counts["too_long_for_input"] += 1
            continue
        if len(tgt_ids) + 1 > cfg.target_length:
            counts["too_long_for_target"] += 1
            continue
        if max(len(src_ids), len(tgt_ids)) > f.max_token_ratio * max(1, min(len(src_ids), len(tgt_ids))):
            counts["length_ratio"] += 1
            continue
        kept.append({**r, "source": s, "target": t, "input_ids": input_ids, "labels": tgt_ids + [EOS_ID]})
    counts["kept"] += len(kept)
    return kept


def split_pair(kept: list[dict[str, Any]], cfg: TranslationConfig, counts: Counter) -> dict[str, list[dict[str, Any]]]:
    """Train/validation/test of one pair: by the English key; held-out splits one target per source."""
    sp = cfg.splits
    out: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    for r in kept:
        out[split_of(r["key"], cfg.seed, sp.validation_fraction, sp.test_fraction)].append(r)
    for split in ("validation", "test"):
        first: dict[str, dict[str, Any]] = {}
        for r in sorted(out[split], key=lambda r: (r["source"], r["target"])):
            if r["source"] in first:
                counts["alternative_targets"] += 1
            else:
                first[r["source"]] = r
        out[split] = list(first.values())
    caps = {"train": sp.max_train_per_pair, "validation": sp.max_validation_per_pair, "test": sp.max_test_per_pair}
    for split, cap in caps.items():
        out[split].sort(key=lambda r: (_order(cfg.seed, r["source"] + "\t" + r["target"]), r["source"], r["target"]))
        if cap is not None and len(out[split]) > cap:
            counts[f"{split}_over_cap"] += len(out[split]) - cap
            out[split] = out[split][:cap]
    return out


def fingerprint(cfg: TranslationConfig, tok: Tokenizer, vocab_size: int) -> str:
    """What the prepared data depends on: sources, filters, splits, sampling, lengths, tokenizer."""
    key = {k: v for k, v in cfg.model_dump(mode="json").items() if k not in ("finetune", "eval", "pretrain", "name")}
    key.update(tokenizer=tok.fingerprint(), vocab_size=vocab_size, format=FORMAT)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def balance(train: dict[str, list[dict[str, Any]]], cfg: TranslationConfig) -> tuple[Any, dict[str, Any]]:
    """The interleaved training Dataset (temperature-sampled pairs) and its pair shares."""
    import datasets

    from mt5study.data.sampling import empirical_shares, interleave, temperature_probs

    sizes = {pair: len(rs) for pair, rs in train.items()}
    probs = temperature_probs(sizes, cfg.sampling.alpha)
    by_pair = {pair: datasets.Dataset.from_dict({
        "input_ids": [_pad(r["input_ids"], cfg.input_length, PAD_ID) for r in rs],
        "labels": [_pad(r["labels"], cfg.target_length, IGNORE) for r in rs],
        "pair": [pair] * len(rs)}, features=_features(with_pair=True)) for pair, rs in train.items()}
    mixed = interleave(by_pair, probs, cfg.seed, "all_exhausted")
    if cfg.sampling.max_train_examples and len(mixed) > cfg.sampling.max_train_examples:
        mixed = mixed.select(range(cfg.sampling.max_train_examples))
    shares = empirical_shares(mixed["pair"], sorted(sizes))
    return mixed.remove_columns("pair"), {"sizes": sizes, "probabilities": probs, "shares": shares,
                                          "examples": len(mixed), "alpha": cfg.sampling.alpha}


def _features(with_pair: bool = False):
    import datasets

    cols = {"input_ids": datasets.Sequence(datasets.Value("int32")), "labels": datasets.Sequence(datasets.Value("int32"))}
    if with_pair:
        cols["pair"] = datasets.Value("string")
    return datasets.Features(cols)


def write(out: Path, per_pair: dict[str, dict[str, list]], counts: dict[str, Counter], reports: list[dict[str, Any]],
          tok: Tokenizer, cfg: TranslationConfig, vocab_size: int, fp: str) -> dict[str, Any]:
    """Examples, the trainer's dataset and the manifest (last)."""
    import datasets

    if out.exists():
        shutil.rmtree(out)
    (out / "examples").mkdir(parents=True)
    for split in SPLITS:
        with open(out / "examples" / f"{split}.jsonl", "w", encoding="utf-8") as fh:
            for pair in cfg.pairs:
                for r in per_pair[pair][split]:
                    fh.write(json.dumps({"pair": pair, **{k: r[k] for k in ("src_lang", "tgt_lang", "source", "target",
                                                                               "key", "origin")}}, ensure_ascii=False) + "\n")
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bar()
    try:
        train, sampling = balance({p: per_pair[p]["train"] for p in cfg.pairs}, cfg)
        validation = [r for p in cfg.pairs for r in per_pair[p]["validation"]]
        val = datasets.Dataset.from_dict({"input_ids": [_pad(r["input_ids"], cfg.input_length, PAD_ID) for r in validation],
                                          "labels": [_pad(r["labels"], cfg.target_length, IGNORE) for r in validation]},
                                         features=_features())
        val = val.shuffle(seed=cfg.seed)  # the trainer's eval loss reads the first batches: mix the pairs
        datasets.DatasetDict({"train": train, "validation": val}).save_to_disk(str(out / "dataset"))
    finally:
        if bars_were_on:
            datasets.enable_progress_bar()
    manifest = {
        "format": FORMAT, "fingerprint": fp, "vocab_size": vocab_size, "tokenizer": tok.name, "tokenizer_size": tok.size,
        "input_length": cfg.input_length, "target_length": cfg.target_length, "pad_id": PAD_ID, "eos_id": EOS_ID,
        "label_pad_id": IGNORE, "pairs": list(cfg.pairs),
        "num_examples": {"train": len(train), "validation": len(val)},
        "split_sizes": {p: {s: len(per_pair[p][s]) for s in SPLITS} for p in cfg.pairs},
        "counts": {p: dict(sorted(counts[p].items())) for p in cfg.pairs},
        "sampling": sampling, "sources": reports, "environment": records_lib.environment(),
    }
    records_lib.write_json_atomic(out / "manifest.json", manifest)  # last: marks the folder complete
    return manifest


def what_was_read(pair: str, reports: list[dict[str, Any]]) -> str:
    """What each source gave a pair (records, and per catalog language the catalogs found, read,
    bad or missing, with the first errors): the reason a pair came out empty, in words."""
    langs = set(pair.split("-")) - {"en"}
    out = []
    for rep in reports:
        text = f"{rep.get('kind')}: {rep.get('records', {}).get(pair, 0)} records"
        if isinstance(rep.get("languages"), dict):
            for lang in sorted(langs):
                c = rep["languages"].get(lang, {})
                text += (f"; {lang}: locales {c.get('locales') or 'none found'}, catalogs found "
                         f"{c.get('catalogs_found', 0)}, read {c.get('catalogs_read', 0)}, bad charset "
                         f"{c.get('catalogs_bad_charset', 0)}, unreadable {c.get('catalogs_unreadable', 0)}, domains "
                         f"missing {c.get('domains_missing', 0)}, messages kept {c.get('kept', 0)}")
        if rep.get("errors"):
            text += f"; errors: {rep['errors'][:3]}"
        out.append(text)
    return " | ".join(out) or "no sources"


def build_splits(records: list[dict[str, Any]], cfg: TranslationConfig, tok: Tokenizer,
                 reports: list[dict[str, Any]] | None = None) -> tuple[dict[str, dict[str, list]], dict[str, Counter]]:
    """Filter and split every pair; PairError for a pair without data (saying what each source
    read, from `reports`) or with an empty split."""
    by_pair: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_pair[f"{r['src_lang']}-{r['tgt_lang']}"].append(r)
    per_pair, counts = {}, {}
    for pair in cfg.pairs:
        c: Counter = Counter()
        if not by_pair.get(pair):
            raise PairError(f"pair {pair}: no parallel data in any source ({what_was_read(pair, reports or [])})")
        per_pair[pair] = split_pair(filter_pair(by_pair[pair], cfg, tok, c), cfg, c)
        for split in SPLITS:
            c[f"{split}_examples"] = len(per_pair[pair][split])
        empty = [s for s in SPLITS if not per_pair[pair][s]]
        if empty:
            raise PairError(f"pair {pair}: empty {empty} split(s) after filtering; counts: {dict(c)}")
        counts[pair] = c
    return per_pair, counts


def prepare(cfg: TranslationConfig, root: Path, tokenizer: str, vocab_size: int, redo: bool = False) -> Path:
    """Build (or reuse) <root>/data/<fingerprint>; returns its path."""
    from mt5study.translation import loaders

    tok = Tokenizer(tokenizer)
    fp = fingerprint(cfg, tok, vocab_size)
    out = Path(root) / "data" / fp[:12]
    if records_lib.prepared_matches(out, fp, redo):
        return out
    pairs = [parse_pair(p) for p in cfg.pairs]
    records, reports = loaders.load(list(cfg.sources), pairs)
    per_pair, counts = build_splits(records, cfg, tok, reports)
    write(out, per_pair, counts, reports, tok, cfg, vocab_size, fp)
    return out


def read_examples(prepared: Path, split: str) -> list[dict[str, Any]]:
    with open(Path(prepared) / "examples" / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def sizes(prepared: Path) -> Any:
    """Per pair: every filter's count, the split sizes and the training share (the manifest as a table)."""
    import pandas as pd

    m = records_lib.read_json(Path(prepared) / "manifest.json")
    cols = ["read", "empty", "no_letters", "too_short", "too_long_chars", "duplicate", "too_long_for_input",
            "too_long_for_target", "length_ratio", "kept", "alternative_targets",
            "train_examples", "validation_examples", "test_examples"]
    rows = [{"pair": p, **{c: m["counts"][p].get(c, 0) for c in cols},
             "train_share": round(m["sampling"]["shares"][p], 3)} for p in m["pairs"]]
    return pd.DataFrame(rows).set_index("pair")


def source_report(prepared: Path) -> Any:
    """Per source and language: catalogs (pages) read, bad ones, messages and how they were cleaned."""
    import pandas as pd

    m = records_lib.read_json(Path(prepared) / "manifest.json")
    rows = []
    for rep in m["sources"]:
        langs = rep.get("languages")
        if isinstance(langs, dict):
            for lang, c in langs.items():
                rows.append({"source": rep["kind"], "lang": lang, **{k: v for k, v in c.items() if k != "locales"}})
        else:
            rows.append({"source": rep["kind"], **{k: v for k, v in rep.items() if isinstance(v, int)}})
    return pd.DataFrame(rows).fillna(0)
