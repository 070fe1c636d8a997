"""Translate the held-out strings with a fine-tuned model and score them with sacrebleu.

Each run's `model/` (Hugging Face format) translates every test string of every pair twice:
greedy (num_beams=1) and beam search (`eval.num_beams`). Scores per pair and decoding:

- BLEU (sacrebleu.BLEU): tokenize `13a`, except `zh` for Chinese targets, `ja-mecab` for
  Japanese (MeCab with IPAdic; where mecab-python3/ipadic are missing, `char` and the table says
  so), and `char` for Korean and Thai (no word spaces, and ko-mecab is not installed);
- chrF++ (sacrebleu.CHRF with word_order=2).

Every score row carries its sacrebleu signature (tokenizer, smoothing, version ...).
"""

from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mt5study import records
from mt5study.qa.prepare import PAD_ID, Tokenizer
from mt5study.translation.config import EvalConfig
from mt5study.translation.prepare import read_examples

# The code whose change makes a cached evaluation stale (records.code_fingerprint's kinds; the
# lead may move this entry into records.CODE, beside qa_eval).
records.CODE.setdefault("translation_eval", ("translation/evaluate.py", "translation/prepare.py", "translation/config.py",
                                             "qa/prepare.py", "model.py"))
records.LIBRARIES.setdefault("translation_eval", ("torch", "transformers", "sentencepiece", "numpy"))


@lru_cache(maxsize=None)
def bleu_tokenizer(lang: str) -> str:
    """sacrebleu's tokenizer for a target language (ja-mecab only where MeCab loads)."""
    if lang == "zh":
        return "zh"
    if lang == "ja":
        try:
            import sacrebleu

            sacrebleu.BLEU(tokenize="ja-mecab").corpus_score(["テスト"], [["テスト"]])
            return "ja-mecab"
        except (ImportError, RuntimeError, OSError):
            return "char"
    if lang in ("ko", "th"):
        return "char"
    return "13a"


def score(hypotheses: list[str], references: list[str], tgt_lang: str) -> dict[str, Any]:
    """Corpus BLEU and chrF++ of one pair's translations, with their signatures."""
    import sacrebleu

    bleu = sacrebleu.BLEU(tokenize=bleu_tokenizer(tgt_lang))
    chrf = sacrebleu.CHRF(word_order=2)
    b, c = bleu.corpus_score(hypotheses, [references]), chrf.corpus_score(hypotheses, [references])
    return {"bleu": b.score, "chrf": c.score, "bleu_signature": str(bleu.get_signature()),
            "chrf_signature": str(chrf.get_signature()), "segments": len(hypotheses)}


@torch.no_grad()
def translate(model: Any, tok: Tokenizer, sources: list[list[int]], cfg: EvalConfig, num_beams: int) -> list[str]:
    """Decoded translations of prefixed, tokenized sources (batches of similar length)."""
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: dict[int, str] = {}
    for b in range(0, len(order), cfg.batch_size):
        idx = order[b: b + cfg.batch_size]
        width = max(len(sources[i]) for i in idx)
        ids = torch.full((len(idx), width), PAD_ID, dtype=torch.long)
        for k, i in enumerate(idx):
            ids[k, : len(sources[i])] = torch.tensor(sources[i])
        kwargs = {"num_beams": num_beams, "length_penalty": cfg.length_penalty, "early_stopping": True} if num_beams > 1 else {}
        seqs = model.generate(input_ids=ids, attention_mask=(ids != PAD_ID).long(), max_new_tokens=cfg.max_new_tokens,
                              do_sample=False, **kwargs)
        for k, i in enumerate(idx):
            out[i] = tok.decode(seqs[k].tolist())
    return [out[i] for i in range(len(sources))]


def _sacrebleu_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("sacrebleu")
    except metadata.PackageNotFoundError:
        return None


def decodings(cfg: EvalConfig) -> dict[str, int]:
    """Decoding name -> beams."""
    return {"greedy": 1, **({f"beam{cfg.num_beams}": cfg.num_beams} if cfg.beam else {})}


# The cache of an evaluation, shared with the QA study (mt5study.records).
eval_key, read_cached, write_cached = records.eval_key, records.read_cached, records.write_cached


def evaluate_run(run_dir: Path, prepared: Path, cfg: EvalConfig, tok: Tokenizer, out: Path,
                 redo: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Translations and scores of one run, cached in `out` while the run, the data, the eval params,
    the evaluation code and sacrebleu are unchanged."""
    from mt5study.model import load_checkpoint
    from mt5study.translation.config import task_prefix

    key = eval_key(run_dir, prepared, cfg, "translation_eval", sacrebleu=_sacrebleu_version())
    cached = read_cached(out, key, ("translations", "scores"), redo)
    if cached is not None:
        return cached[0], cached[1]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    model = load_checkpoint(str(Path(run_dir) / "model"))
    model.eval()
    test = read_examples(prepared, "test")
    sources = [tok.encode(task_prefix(r["src_lang"], r["tgt_lang"]) + r["source"]) + [model.config.eos_token_id]
               for r in test]
    rows, scores = [], []
    for name, beams in decodings(cfg).items():
        hyps = translate(model, tok, sources, cfg, beams)
        rows += [{"pair": r["pair"], "decoding": name, "source": r["source"], "reference": r["target"],
                  "translation": h} for r, h in zip(test, hyps)]
    table = pd.DataFrame(rows)
    for (pair, name), g in table.groupby(["pair", "decoding"], sort=True):
        scores.append({"pair": pair, "decoding": name, "bleu_tokenize": bleu_tokenizer(pair.split("-")[1]),
                       **score(g["translation"].tolist(), g["reference"].tolist(), pair.split("-")[1])})
    scores_df = pd.DataFrame(scores)
    write_cached(out, key, {"translations": table, "scores": scores_df}, time.perf_counter() - t0)
    return table, scores_df
