"""Evaluation of a fine-tuned model: greedy answers in one process, EM/F1 per language.

The model is read from a run's `model/` folder (Hugging Face format, no DeepSpeed). Every window
of a validation question (prepare's `eval/`) is answered greedily; the question's answer is the
one with the highest mean token log-probability over its windows (the answer tokens and </s>).
A question that has no window (its question alone fills the encoder input) is answered with ""
and still counts, as the official scripts score an unanswered question 0.

Scores per language under two normalisations (mt5study.qa.metrics): SQuAD v1.1's (rules=squad)
and MLQA's language-aware one (rules=mlqa, or mlqa-extension outside MLQA's seven languages).
The `all` rows are the unweighted mean over languages, as XTREME averages its languages.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mt5study import records
from mt5study.qa.config import EvalConfig
from mt5study.qa.metrics import rules, squad_scores
from mt5study.qa.prepare import PAD_ID, Tokenizer


def read_examples(prepared: Path, split: str = "validation") -> list[dict[str, Any]]:
    with open(Path(prepared) / "examples" / f"{split}.jsonl", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def questions(prepared: Path, cfg: EvalConfig) -> list[dict[str, Any]]:
    """The validation questions evaluated: every one, or the first N per language."""
    out, seen = [], {}
    for ex in read_examples(prepared):
        seen[ex["lang"]] = seen.get(ex["lang"], 0) + 1
        if cfg.max_questions_per_language is None or seen[ex["lang"]] <= cfg.max_questions_per_language:
            out.append(ex)
    return out


@torch.no_grad()
def generate(model_dir: Path, prepared: Path, cfg: EvalConfig, tokenizer: Tokenizer) -> pd.DataFrame:
    """One row per evaluated question: id, lang, prediction, window used, mean log-prob."""
    import datasets

    from mt5study.model import load_checkpoint

    model = load_checkpoint(str(model_dir))
    model.eval()
    wanted = {ex["id"]: ex for ex in questions(prepared, cfg)}
    windows = datasets.load_from_disk(str(Path(prepared) / "eval"))
    rows = [r for r in windows if r["id"] in wanted]
    order = np.argsort([len(r["input_ids"]) for r in rows], kind="stable")  # similar lengths per batch
    best: dict[str, tuple[float, str, int]] = {}
    for b in range(0, len(order), cfg.batch_size):
        batch = [rows[i] for i in order[b: b + cfg.batch_size]]
        width = max(len(r["input_ids"]) for r in batch)
        ids = torch.full((len(batch), width), PAD_ID, dtype=torch.long)
        for k, r in enumerate(batch):
            ids[k, : len(r["input_ids"])] = torch.tensor(r["input_ids"])
        out = model.generate(input_ids=ids, attention_mask=(ids != PAD_ID).long(), max_new_tokens=cfg.max_new_tokens,
                             do_sample=False, num_beams=1, output_scores=True, return_dict_in_generate=True)
        logp = model.compute_transition_scores(out.sequences, out.scores, normalize_logits=True)
        tokens = out.sequences[:, 1:]  # after the decoder start token
        eos = model.config.eos_token_id
        for k, r in enumerate(batch):
            seq = tokens[k].tolist()
            n = seq.index(eos) + 1 if eos in seq else len(seq)  # answer tokens and </s>
            score = float(logp[k, :n].mean()) if n else float("-inf")
            if r["id"] not in best or score > best[r["id"]][0]:
                best[r["id"]] = (score, tokenizer.decode(seq[:n]), int(r["window"]))
    table = []
    for qid, ex in wanted.items():
        score, text, window = best.get(qid, (float("nan"), "", -1))
        table.append({"id": qid, "lang": ex["lang"], "question": ex["question"], "prediction": text,
                      "references": list(ex["answers"]["text"]), "window": window, "mean_logprob": score})
    return pd.DataFrame(table)


def score_table(predictions: pd.DataFrame) -> pd.DataFrame:
    """Tidy scores: one row per language (and `all`) and normalisation."""
    rows = []
    for lang, group in predictions.groupby("lang", sort=True):
        preds, refs = group["prediction"].tolist(), [list(r) for r in group["references"]]
        for norm, lang_arg in (("squad", None), ("language-aware", lang)):
            s = squad_scores(preds, refs, lang=lang_arg)
            rows.append({"lang": lang, "normalization": norm, "rules": rules(lang_arg), "questions": len(group), **s})
    table = pd.DataFrame(rows)
    if not table.empty:
        mean = table.groupby("normalization", as_index=False).agg(
            questions=("questions", "sum"), exact_match=("exact_match", "mean"), f1=("f1", "mean"))
        mean["lang"], mean["rules"] = "all", "mean over languages"
        table = pd.concat([table, mean[table.columns]], ignore_index=True)
    return table


def evaluate_run(run_dir: Path, prepared: Path, cfg: EvalConfig, tokenizer: Tokenizer, out: Path,
                 redo: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Predictions and scores of one fine-tuned run, cached in `out` while the run, the data, the eval
    params and the evaluation code are unchanged (records.eval_key)."""
    key = records.eval_key(run_dir, prepared, cfg, "qa_eval")
    cached = records.read_cached(out, key, ("predictions", "scores"), redo)
    if cached is not None:
        return cached[0], cached[1]
    t0 = time.perf_counter()
    predictions = generate(Path(run_dir) / "model", prepared, cfg, tokenizer)
    scores = score_table(predictions)
    records.write_cached(out, key, {"predictions": predictions, "scores": scores}, time.perf_counter() - t0)
    return predictions, scores
