"""Which half of the pretraining carries over to translation: fine-tune from a start that keeps the
pretrained encoder and token embedding and draws the decoder and output layer afresh.

The translation study compares the pretrained start with random initialisation. This diagnostic
adds the start between them: the pretrained checkpoint's encoder and shared embedding, with every
decoder weight and the untied output layer drawn as the random-initialisation run of the same
seed draws them (mt5study.model.build after torch.manual_seed(seed), T5X's scheme), fine-tuned
with the study's own params, seeds and budget: one start per seed, so the spread includes the
decoder's draw. Its chrF++ and held-out loss beside the study's two starts say what a fresh decoder
changes.

    .venv/bin/python scripts/encoder_start.py --params params/cpu/translation.yaml \
        --study outputs/translation --out outputs/encoder_start

--study is the translation study's finished folder (its two starts are read from it, not rerun).
--study must have been run with the same translation params (compared with its study.json).
Writes OUT/seed<k>/checkpoint/ (the mixed start of seed k), OUT/seed<k>/study/ (its fine-tuning
run and scores, as the study writes them) and OUT/comparison.json with the three starts' numbers.
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
from mt5study.config import ConfigError, load, to_dict
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
    if not all((study / f).is_file() for f in ("results.parquet", "runs.parquet", "study.json")):
        print(f"--study {study}: no results.parquet, runs.parquet and study.json (run the translation study first)",
              file=sys.stderr)
        return 2
    t = params.translation
    ran = json.loads((study / "study.json").read_text())["params"]["translation"]
    mine_cfg = to_dict(params)["translation"]
    for key in ("pairs", "filters", "splits", "input_length", "target_length"):
        if ran.get(key) != mine_cfg.get(key):
            print(f"--study {study} was run with other translation.{key} than {args.params}", file=sys.stderr)
            return 2
    for key in ("params", "seeds", "overrides"):
        if ran["finetune"].get(key) != mine_cfg["finetune"].get(key):
            print(f"--study {study} was run with other translation.finetune.{key} than {args.params}", file=sys.stderr)
            return 2
    out = Path(args.out)
    results, runs = [], []
    for seed in t.finetune.seeds:
        root = out / f"seed{seed}"
        checkpoint = ft.base_model(params, root / "study")["checkpoint"]  # a hub name or a folder
        ckpt = encoder_start(checkpoint, root / "checkpoint", seed)
        mixed = load(find(args.params), {"translation.finetune.checkpoint": str(ckpt.resolve()),
                                         "translation.finetune.compare_random_init": False,
                                         "translation.finetune.seeds": [seed]},
                     schema=TranslationParams)
        done = ft.run(mixed, root / "study")
        results.append(done["results"])
        runs.append(done["runs"])
    both = pd.read_parquet(study / "results.parquet")
    mine = pd.concat(results, ignore_index=True).assign(init="pretrained_encoder")
    table = ft.per_pair_table(pd.concat([both, mine], ignore_index=True))
    # Held-out loss at the last step: each run's summary (final_eval_loss), as the study records it.
    losses = pd.concat([pd.read_parquet(study / "runs.parquet"), pd.concat(runs).assign(init="pretrained_encoder")],
                       ignore_index=True)[["init", "seed", "final_eval_loss"]]
    print(table.to_string())
    print(losses.groupby("init").final_eval_loss.agg(["mean", "std", "count"]).round(3).to_string())
    records.write_json_atomic(out / "comparison.json", {
        "environment": records.environment(), "params": args.params, "study": str(study),
        "per_pair": table.to_dict(orient="records"), "held_out_loss": losses.to_dict(orient="records")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
