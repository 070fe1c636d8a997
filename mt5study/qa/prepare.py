"""QA examples -> the trainer's dataset schema (text-to-text, windows over long contexts).

Each example becomes `question: <q> context: <window>` -> `<answer>`: the question and context
are tokenized with the pretraining tokenizer (SentencePiece itself, which gives byte offsets, so
the answer's characters map to tokens exactly), the context cut into windows of
`input_length - len(question part) - 1` tokens that start `window.stride` tokens apart.

- Training and the trainer's validation loss read only windows holding the whole answer, with
  labels = the answer's tokens + </s>. Windows without the answer are dropped (no "no answer"
  target: the set is extractive and every question has one); an answer that no window holds
  (longer than a window) or that does not fit `target_length` is dropped, never truncated into a
  wrong label. Every such case is counted per split and language in manifest.json.
- Evaluation reads every window of each validation question (`eval/`, at most
  `window.max_windows`); `mt5study.qa.evaluate` keeps the answer generated with the highest mean
  token log-probability across a question's windows.

Folder (written by `prepare`; manifest.json last, so a folder without it is incomplete):

    examples/{train,validation}.jsonl   the checked QA records (loaders' flat schema)
    dataset/                            DatasetDict train/validation: input_ids, labels (trainer)
    eval/                               Dataset: id, lang, window, input_ids (unpadded)
    manifest.json                       vocab_size, lengths, tokenizer, counts, source report
"""

from __future__ import annotations

import hashlib
import json
import shutil
from bisect import bisect_left
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from mt5study import records
from mt5study.paths import find
from mt5study.qa.config import QAConfig

PAD_ID, EOS_ID, IGNORE = 0, 1, -100  # T5's pad and eos ids; label positions the loss skips
FORMAT = "mt5study-qa/1"


def input_prefix(question: str) -> str:
    """The text before the context window (T5's SQuAD format: question, then context)."""
    return f"question: {question} context:"


# ----------------------------------------------------------------------------- the tokenizer

def resolve_tokenizer(spec: str) -> str:
    """An ETL output folder -> its tokenizer/; a tokenizer folder stays; else a hub name."""
    local = find(spec)
    if (local / "tokenizer").is_dir():
        return str(local / "tokenizer")
    if local.is_dir():
        return str(local)
    if spec.startswith((".", "/")) or spec.count("/") != 1:
        raise FileNotFoundError(f"tokenizer {spec}: no such folder ({local}) and not a hub name")
    return spec


class Tokenizer:
    """Encode with character offsets, decode without special tokens; SentencePiece when the
    folder has spiece.model (as the ETL's and Google's mT5 tokenizers do), else the HF fast one."""

    def __init__(self, name_or_path: str):
        from mt5study.data.tokenizer import load_tokenizer

        self.name = name_or_path
        self.hf = load_tokenizer(name_or_path)
        self.size = len(self.hf)  # ids in use, sentinels included
        spm_file = Path(name_or_path) / "spiece.model"
        self.sp = None
        if spm_file.is_file():
            import sentencepiece as spm

            self.sp = spm.SentencePieceProcessor(model_file=str(spm_file))

    def encode(self, text: str) -> list[int]:
        if self.sp is not None:
            return list(self.sp.encode(text, out_type=int))
        return self.hf(text, add_special_tokens=False, split_special_tokens=True)["input_ids"]

    def encode_offsets(self, text: str) -> tuple[list[int], list[int], list[int]]:
        """Token ids and each token's [start, end) in characters of `text`."""
        if self.sp is None:
            enc = self.hf(text, add_special_tokens=False, split_special_tokens=True, return_offsets_mapping=True)
            return enc["input_ids"], [a for a, _ in enc["offset_mapping"]], [b for _, b in enc["offset_mapping"]]
        proto = self.sp.encode(text, return_type="proto")
        # SentencePiece reports byte offsets into the UTF-8 input: map them to characters.
        bounds = np.concatenate([[0], np.cumsum([len(c.encode("utf-8")) for c in text])]).tolist()
        ids, starts, ends = [], [], []
        for piece in proto.pieces:
            ids.append(piece.id)
            starts.append(bisect_left(bounds, piece.begin))
            ends.append(bisect_left(bounds, piece.end))
        # Byte-fallback pieces of one character: the leading ones are empty (begin == end);
        # give them the span of the piece that completes the character.
        for k in range(len(ids) - 2, -1, -1):
            if starts[k] == ends[k]:
                starts[k], ends[k] = starts[k + 1], ends[k + 1]
        return ids, starts, ends

    def decode(self, ids: list[int]) -> str:
        ids = [int(i) for i in ids if int(i) not in (PAD_ID, EOS_ID)]
        if self.sp is not None:
            ids = [i for i in ids if i < self.sp.get_piece_size()]  # sentinels are not spm pieces
            return self.sp.decode(ids)
        return self.hf.decode(ids, skip_special_tokens=True)

    def fingerprint(self) -> str:
        from mt5study.data.tokenizer import tokenizer_hash

        return tokenizer_hash(Path(self.name)) if Path(self.name).is_dir() else self.name


# ----------------------------------------------------------------------------- windows

def windows(n_tokens: int, width: int, stride: int) -> list[tuple[int, int]]:
    """[start, end) token ranges of width `width`, `stride` apart, the last reaching the end."""
    out, start = [], 0
    while True:
        out.append((start, min(start + width, n_tokens)))
        if start + width >= n_tokens:
            return out
        start += stride


def answer_tokens(starts: list[int], ends: list[int], a_start: int, a_end: int) -> tuple[int, int] | None:
    """[first, last) of the tokens overlapping the answer's characters [a_start, a_end)."""
    hit = [k for k, (s, e) in enumerate(zip(starts, ends)) if e > a_start and s < a_end]
    return (hit[0], hit[-1] + 1) if hit else None


def example_windows(ex: dict[str, Any], tok: Tokenizer, cfg: QAConfig, counts: Counter) -> list[dict[str, Any]]:
    """The windows of one example: input ids and, where the answer is inside, labels."""
    prefix = tok.encode(input_prefix(ex["question"]))
    width = cfg.input_length - len(prefix) - 1  # context tokens per window (one for </s>)
    if width < cfg.window.min_context_tokens:
        counts["question_too_long"] += 1
        return []
    ids, starts, ends = tok.encode_offsets(ex["context"])
    spans = windows(len(ids), width, cfg.window.stride)
    counts["examples"] += 1
    counts["windowed"] += len(spans) > 1
    counts["windows"] += len(spans)
    a_text, a_start = ex["answers"]["text"][0], ex["answers"]["answer_start"][0]
    located = answer_tokens(starts, ends, a_start, a_start + len(a_text))
    target = tok.encode(a_text) + [EOS_ID]
    fits_target = len(target) <= cfg.target_length
    counts["answer_longer_than_target"] += not fits_target
    counts["answer_not_tokenized"] += located is None  # cannot happen for a non-blank answer: checked
    if located and located[1] - located[0] > width:
        counts["answer_longer_than_window"] += 1
    out, trained = [], False
    for w, (s, e) in enumerate(spans):
        inside = located is not None and s <= located[0] and located[1] <= e
        row = {"window": w, "input_ids": prefix + ids[s:e] + [EOS_ID], "has_answer": inside}
        if inside and fits_target:
            row["labels"] = target
            trained = True
        out.append(row)
    counts["windows_with_answer"] += sum(r["has_answer"] for r in out)
    counts["trained"] += trained
    return out


# ----------------------------------------------------------------------------- the folder

def fingerprint(cfg: QAConfig, tok: Tokenizer, vocab_size: int) -> str:
    """What the prepared data depends on: source, lengths, windows, seed, tokenizer bytes."""
    key = {"source": cfg.source.model_dump(mode="json"), "seed": cfg.seed, "input_length": cfg.input_length,
           "target_length": cfg.target_length, "window": cfg.window.model_dump(mode="json"),
           "tokenizer": tok.fingerprint(), "vocab_size": vocab_size, "format": FORMAT}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def _pad(ids: list[int], length: int, value: int) -> list[int]:
    return ids + [value] * (length - len(ids))


def write(out: Path, splits: dict[str, list[dict[str, Any]]], source_report: dict[str, Any], tok: Tokenizer,
          cfg: QAConfig, vocab_size: int, fp: str) -> dict[str, Any]:
    """Tokenize, window and save everything; returns the manifest (written last)."""
    import datasets

    if out.exists():
        shutil.rmtree(out)
    (out / "examples").mkdir(parents=True)
    counts: dict[str, dict[str, Counter]] = {s: defaultdict(Counter) for s in splits}
    trainer: dict[str, dict[str, list]] = {}
    evaluation: dict[str, list] = {"id": [], "lang": [], "window": [], "input_ids": [], "has_answer": []}
    for split, examples in splits.items():
        with open(out / "examples" / f"{split}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples)
        cols: dict[str, list] = {"input_ids": [], "labels": []}
        for ex in examples:
            c = counts[split][ex["lang"]]
            rows = example_windows(ex, tok, cfg, c)
            for r in rows:
                if "labels" in r:
                    cols["input_ids"].append(_pad(r["input_ids"], cfg.input_length, PAD_ID))
                    cols["labels"].append(_pad(r["labels"], cfg.target_length, IGNORE))
            c["training_windows"] += sum("labels" in r for r in rows)
            if split == "validation" and rows:
                c["eval_questions"] += 1
                c["eval_windows_not_read"] += max(0, len(rows) - cfg.window.max_windows)
                for r in rows[: cfg.window.max_windows]:
                    for k, v in (("id", ex["id"]), ("lang", ex["lang"]), ("window", r["window"]),
                                 ("input_ids", r["input_ids"]), ("has_answer", r["has_answer"])):
                        evaluation[k].append(v)
        if not cols["input_ids"]:
            raise ValueError(f"QA {split} split: no example left with its answer inside a window "
                             f"(counts: {_plain(counts[split])})")
        trainer[split] = cols
    features = datasets.Features({"input_ids": datasets.Sequence(datasets.Value("int32")),
                                  "labels": datasets.Sequence(datasets.Value("int32"))})
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bar()  # a few small saves: their bars would only clutter notebooks
    try:
        datasets.DatasetDict({s: datasets.Dataset.from_dict(c, features=features) for s, c in trainer.items()}
                             ).save_to_disk(str(out / "dataset"))
        datasets.Dataset.from_dict(evaluation).save_to_disk(str(out / "eval"))
    finally:
        if bars_were_on:
            datasets.enable_progress_bar()
    manifest = {
        "format": FORMAT, "fingerprint": fp, "vocab_size": vocab_size, "tokenizer": tok.name,
        "tokenizer_size": tok.size, "input_length": cfg.input_length, "target_length": cfg.target_length,
        "window": cfg.window.model_dump(mode="json"), "pad_id": PAD_ID, "eos_id": EOS_ID, "label_pad_id": IGNORE,
        "num_examples": {s: len(c["input_ids"]) for s, c in trainer.items()},
        "num_eval_windows": len(evaluation["id"]), "counts": {s: _plain(c) for s, c in counts.items()},
        "source": source_report, "environment": records.environment(),
    }
    records.write_json_atomic(out / "manifest.json", manifest)  # last: marks the folder complete
    return manifest


def _plain(per_lang: dict[str, Counter]) -> dict[str, dict[str, int]]:
    return {lang: {k: int(v) for k, v in sorted(c.items())} for lang, c in sorted(per_lang.items())}


def prepare(cfg: QAConfig, root: Path, tokenizer: str, vocab_size: int, redo: bool = False) -> Path:
    """Build (or reuse) the prepared folder <root>/data/<fingerprint>; returns its path."""
    from mt5study.qa import loaders

    tok = Tokenizer(tokenizer)
    fp = fingerprint(cfg, tok, vocab_size)
    out = Path(root) / "data" / fp[:12]
    if records.prepared_matches(out, fp, redo):
        return out
    splits, report = loaders.load(cfg.source, cfg.seed)
    for split in ("train", "validation"):
        if not splits[split]:
            raise ValueError(f"QA source gave no {split} examples; what was counted: {json.dumps(report[split])[:2000]}")
    write(out, splits, report, tok, cfg, vocab_size, fp)
    return out


def sizes(folder: Path) -> Any:
    """Per split and language: questions, windows, training windows and every drop, as a table."""
    import pandas as pd

    manifest = records.read_json(Path(folder) / "manifest.json")
    rows = []
    for split, per_lang in manifest["counts"].items():
        src = manifest["source"].get(split, {}).get("languages", {})
        for lang, c in per_lang.items():
            dropped = {k: v for k, v in src.get(lang, {}).items()
                       if k not in ("kept", "read", "some_answers_not_at_start")}
            rows.append({"split": split, "lang": lang, "questions": src.get(lang, {}).get("kept", c.get("examples", 0)),
                         **{k: c.get(k, 0) for k in ("examples", "windowed", "windows", "windows_with_answer",
                                                     "training_windows", "question_too_long",
                                                     "answer_longer_than_window", "answer_longer_than_target")},
                         "dropped_by_checks": sum(dropped.values())})
    return pd.DataFrame(rows).sort_values(["split", "lang"]).reset_index(drop=True)


def build_report(folder: Path) -> Any:
    """How the embedded man-page set was built, per language: pages, options, answers, questions."""
    import pandas as pd

    build = records.read_json(Path(folder) / "manifest.json")["source"].get("build")
    if not build:
        return pd.DataFrame()
    cols = ["pages_listed", "pages_read", "pages_without_options", "options_found", "duplicate_option",
            "answer_paragraph", "answer_first_sentence", "answer_too_long", "answer_too_short",
            "questions_not_sampled", "questions_train", "questions_validation", "contexts_train", "contexts_validation"]
    rows = [{"lang": lang, **{c: c_.get(c, 0) for c in cols},
             "commands_train": len(c_["commands"]["train"]), "commands_validation": len(c_["commands"]["validation"])}
            for lang, c_ in sorted(build["languages"].items())]
    return pd.DataFrame(rows).set_index("lang")
