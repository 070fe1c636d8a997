"""Which half of the pretraining carries over to translation: fine-tune from a start that keeps the
pretrained encoder and token embedding and draws the decoder and output layer afresh.

The translation study compares the pretrained start with random initialisation. This diagnostic
adds the start between them: the pretrained checkpoint's encoder and shared embedding, with every
decoder weight and the untied output layer drawn by T5X's initialisation (mt5study.model, seeded),
fine-tuned with the study's own params, seeds and budget. Its chrF++ and held-out loss beside the
study's two starts say whether the pretrained encoder helps and the pretrained decoder hurts.

    .venv/bin/python scripts/encoder_start.py --params params/cpu/translation.yaml \
        --study outputs/translation --out outputs/encoder_start

--study is the translation study's finished folder (its two starts are read from it, not rerun).
Writes OUT/checkpoint/ (the mixed start), OUT/study/ (the fine-tuning runs and scores, as the
study writes them) and OUT/comparison.json with the three starts' per-seed numbers.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import pandas as pd
import torch
from transformers import MT5ForConditionalGeneration

from mt5study import records
from mt5study.config import ConfigError, load
from mt5study.model import fp32_head_, init_weights_, load_checkpoint, share_embeddings
from mt5study.paths import find


def encoder_start(checkpoint: str | Path, out: Path, seed: int) -> Path:
    """Save the pretrained encoder + embedding with a freshly drawn decoder and output layer: the
    decoder is the one mt5study.model.build draws after torch.manual_seed(seed) for this
    architecture (random initialisation's weights), the encoder and embedding the checkpoint's."""
    pretrained = load_checkpoint(checkpoint)
    torch.manual_seed(seed)
    model = MT5ForConditionalGeneration(copy.deepcopy(pretrained.config))  # as build() constructs
    share_embeddings(model)
    init_weights_(model, "t5x")
    fp32_head_(model)
    kept = dict(pretrained.named_parameters())
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.startswith("encoder.") or n == "shared.weight":
                p.copy_(kept[n])
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    return out


def held_out_loss(study: Path) -> pd.DataFrame:
    """The last eval loss of every run of a study folder: init, seed, step, eval_loss."""
    rows = []
    for metrics in sorted(Path(study, "runs").glob("*/seed*/metrics.jsonl")):
        evals = [r for r in map(json.loads, metrics.read_text().splitlines()) if "eval_loss" in r]
        if evals:
            rows.append({"init": metrics.parent.parent.name, "seed": int(metrics.parent.name[4:]),
                         "step": evals[-1]["step"], "eval_loss": evals[-1]["eval_loss"]})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--params", required=True, help="translation params (params/cpu/translation.yaml)")
    ap.add_argument("--study", required=True, help="the translation study's finished folder")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from mt5study.translation import finetune as ft
    from mt5study.translation.config import TranslationParams

    try:
        params = load(find(args.params), schema=TranslationParams)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return 2
    study = Path(args.study)
    if not (study / "results.parquet").is_file():
        print(f"--study {study}: no results.parquet (run the translation study first)", file=sys.stderr)
        return 2
    out = Path(args.out)
    t = params.translation
    ckpt = encoder_start(find(t.finetune.checkpoint), out / "checkpoint", t.seed)
    mixed = load(find(args.params), {"translation.finetune.checkpoint": str(ckpt.resolve()),
                                     "translation.finetune.compare_random_init": False},
                 schema=TranslationParams)
    result = ft.run(mixed, out / "study")

    both = pd.read_parquet(study / "results.parquet")
    mine = result["results"].assign(init="pretrained_encoder")
    table = ft.per_pair_table(pd.concat([both, mine], ignore_index=True))
    losses = pd.concat([held_out_loss(study), held_out_loss(out / "study").assign(init="pretrained_encoder")])
    print(table.to_string())
    print(losses.groupby("init").eval_loss.agg(["mean", "std", "count"]).round(3).to_string())
    records.write_json_atomic(out / "comparison.json", {
        "environment": records.environment(), "params": args.params, "study": str(study),
        "per_pair": table.to_dict(orient="records"), "held_out_loss": losses.to_dict(orient="records")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
