"""Tokens/s of mt5study's step loop against transformers' Seq2SeqTrainer, same model and data.

Both run one process, fp32 (bf16 with --precision bf16), the same preset, batch, sequence
lengths and steps on the synthetic dataset; the first `--warmup` steps are excluded from both.
mt5study goes through `accelerate launch` + DeepSpeed ZeRO-0; Seq2SeqTrainer runs plain torch
(as most users run it). Prints and writes JSON (outputs/bench/trainer.json): a benchmark, not a
test. Usage: python scripts/bench_trainer.py [--preset mini] [--steps 40] [--precision fp32]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from mt5study import batches, config, launch, records
from mt5study.model import build
from mt5study.paths import OUTPUTS

ap = argparse.ArgumentParser()
ap.add_argument("--preset", default="mini")
ap.add_argument("--steps", type=int, default=40)
ap.add_argument("--warmup", type=int, default=5)
ap.add_argument("--micro-batch", type=int, default=16)
ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
args = ap.parse_args()

vocab = 8000
doc = {
    "model": {"preset": args.preset, "vocab_size": vocab},
    "data": {"synthetic": {"num_train": 2048, "num_validation": 64, "vocab_size": vocab},
             "input_length": 64, "target_length": 16},
    "optim": {"name": "adamw", "lr": 1e-3, "schedule": "constant", "grad_clip": 1.0},
    "run": {"seed": 0, "steps": args.steps, "micro_batch": args.micro_batch, "processes_per_node": 1,
            "precision": args.precision, "zero_stage": 0, "log_every": 1, "eval_every": 0, "eval_batches": 1},
}
tokens_per_step = args.micro_batch * (64 + 16)

with tempfile.TemporaryDirectory() as tmp:
    import yaml

    p = Path(tmp) / "bench.yaml"
    p.write_text(yaml.safe_dump(doc))
    params = config.load(p)
    launch.run(p, Path(tmp) / "ours")
    rows = records.read_metrics(Path(tmp) / "ours" / "metrics.jsonl")[args.warmup:]
    ours = tokens_per_step * len(rows) / sum(r["step_seconds"] for r in rows)

    # Seq2SeqTrainer on the same data and model
    from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

    splits = batches.synthetic_splits(params.data, params.run.seed)
    model = build(args.preset, vocab_size=vocab)

    class Timer(TrainerCallback):
        times: list[float] = []

        def on_step_begin(self, a, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            self.times.append(time.perf_counter() - self.t0)

    targs = Seq2SeqTrainingArguments(
        output_dir=str(Path(tmp) / "hf"), per_device_train_batch_size=args.micro_batch, max_steps=args.steps,
        learning_rate=1e-3, lr_scheduler_type="constant", max_grad_norm=1.0, logging_steps=10**9,
        save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=0,
        bf16=args.precision == "bf16", dataloader_num_workers=0, disable_tqdm=True)
    timer = Timer()
    Seq2SeqTrainer(model=model, args=targs, train_dataset=splits["train"], callbacks=[timer]).train()
    hf = tokens_per_step * (args.steps - args.warmup) / sum(timer.times[args.warmup:])

result = {
    "preset": args.preset, "precision": args.precision, "micro_batch": args.micro_batch, "steps": args.steps,
    "tokens_per_step": tokens_per_step, "mt5study_tokens_per_second": ours,
    "seq2seqtrainer_tokens_per_second": hf, "ratio": ours / hf, "env": records.environment(),
}
out = OUTPUTS / "bench" / f"trainer_{args.preset}_{args.precision}.json"
records.write_json_atomic(out, result)
print(f"mt5study {ours:,.0f} tok/s  Seq2SeqTrainer {hf:,.0f} tok/s  ratio {ours / hf:.3f}  -> {out}")
