"""Speed of mt5study's trainer: the 2-rank ZeRO-3 launch against one process without a launcher,
the per-trial overhead of the default study, and (optionally) transformers' Seq2SeqTrainer.

All runs: `mini`, fp32, the same data, seed, global batch and sequence lengths.
1. Throughput: tokens/s over the steps after `--warmup` of
   (a) the default pretraining layout, 2 gloo ranks under `accelerate launch`, ZeRO-3;
   (b) one process, no launcher, ZeRO-0, the same global batch (`run.one_process: true`).
2. Per-trial overhead at the default study's trial size (params/cpu/batch_lr.yaml: its token
   budget at the base global batch, its fixed overrides): the wall time of `launch.run` minus the
   time inside the step loop, as a fraction of the wall time, for both layouts. The trainer's
   summary.json splits it: `start_to_train` (interpreter and imports), `setup` (process group,
   DeepSpeed init, data open, model), `save_weights`; the launcher is the rest.
3. `--hf`: Seq2SeqTrainer on the same model and data, one process (as most users run it).

Prints the measured ratios and writes outputs/bench/trainer_<preset>_<precision>.json: a benchmark,
not a test. Timings depend on what else runs on the machine (env.json's load average says).
Usage: python scripts/bench_trainer.py [--steps 40] [--trial-steps N] [--hf]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt5study import batches, config, launch, records  # noqa: E402
from mt5study.paths import OUTPUTS  # noqa: E402

ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
ap.add_argument("--preset", default="mini")
ap.add_argument("--steps", type=int, default=40, help="steps of each throughput run")
ap.add_argument("--warmup", type=int, default=5, help="first steps left out of tokens/s")
ap.add_argument("--trial-steps", type=int, default=None,
                help="steps of the overhead trials (default: batch_lr's token budget at the base batch)")
ap.add_argument("--hf", action="store_true", help="also time transformers' Seq2SeqTrainer")
ap.add_argument("--only-overhead", action="store_true", help="skip the throughput runs (part 1)")
ap.add_argument("--only-speed", action="store_true", help="skip the overhead trials (part 2)")
args = ap.parse_args()

VOCAB = 8000
LENGTHS = (64, 14)  # params/cpu/mini.yaml's encoder and decoder tokens
MICRO, GLOBAL = 8, 16  # mini.yaml: 8 examples x 2 ranks
LAYOUTS = {  # name -> run overrides on top of the base
    "launched_2rank_zero3": {"run.processes_per_node": 2, "run.zero_stage": 3, "run.grad_accum": 1,
                             "run.one_process": False},  # batch_lr.yaml's fixed asks for one process
    "one_process_zero0": {"run.processes_per_node": 2, "run.zero_stage": 3, "run.grad_accum": 1,
                          "run.one_process": True},
}


def base_doc(steps: int) -> dict:
    """`mini` on a synthetic dataset of the ETL's vocabulary (no ETL output needed)."""
    return {
        "model": {"preset": args.preset, "vocab_size": VOCAB},
        "data": {"synthetic": {"num_train": 4096, "num_validation": 64, "vocab_size": VOCAB},
                 "input_length": LENGTHS[0], "target_length": LENGTHS[1]},
        "optim": {"name": "adamw", "lr": 2e-3, "schedule": "constant", "grad_clip": 1.0},
        "run": {"seed": 0, "steps": steps, "micro_batch": MICRO, "global_batch": GLOBAL, "precision": "fp32",
                "log_every": 1, "eval_every": 0, "eval_batches": 1},
    }


def timed_run(doc: dict, overrides: dict, out: Path) -> tuple[dict, float]:
    p = out.parent / f"{out.name}.yaml"
    p.write_text(yaml.safe_dump(doc))
    t0 = time.perf_counter()
    summary = launch.run(p, out, overrides=overrides)
    return summary, time.perf_counter() - t0


def tokens_per_second(out: Path) -> float:
    rows = records.read_metrics(out / "metrics.jsonl")[args.warmup:]
    if not rows:
        raise SystemExit(f"{out}: no steps after the {args.warmup} warm-up steps; raise --steps")
    tokens = GLOBAL * sum(LENGTHS)
    return tokens * len(rows) / sum(r["step_seconds"] for r in rows)


def trial_setup() -> tuple[int, dict]:
    """Steps and fixed overrides of one default-study trial at the base global batch."""
    study = config.load(ROOT / "params" / "cpu" / "batch_lr.yaml").study
    steps = args.trial_steps or max(1, study.budget_tokens // (GLOBAL * sum(LENGTHS)))
    return steps, dict(study.fixed)


result: dict = {"preset": args.preset, "precision": "fp32", "global_batch": GLOBAL, "lengths": LENGTHS,
                "env": records.environment(load_average=os.getloadavg()),
                # threads per process: launch_env gives a rank cores // ranks unless this is set
                "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}
with tempfile.TemporaryDirectory() as tmp:
    tmp = Path(tmp)
    # 1. throughput
    speed = {}
    for name, ov in ({} if args.only_overhead else LAYOUTS).items():
        summary, _ = timed_run(base_doc(args.steps), ov, tmp / f"speed_{name}")
        speed[name] = tokens_per_second(tmp / f"speed_{name}")
        print(f"{name:22s} {speed[name]:9,.0f} tokens/s", flush=True)
    if speed:
        result["tokens_per_second"] = speed
    if speed:
        result["one_process_over_launched"] = speed["one_process_zero0"] / speed["launched_2rank_zero3"]

    # 2. per-trial overhead at the default study's trial size
    steps, fixed = trial_setup()
    overhead = {}
    for name, ov in ({} if args.only_speed else LAYOUTS).items():
        summary, wall = timed_run(base_doc(steps), {**fixed, **ov}, tmp / f"trial_{name}")
        t = {k: float("nan") if v is None else v for k, v in summary.get("timings_seconds", {}).items()}
        loop = t.get("steps", float("nan"))
        overhead[name] = {
            "trial_steps": steps, "wall_seconds": wall, "step_loop_seconds": loop,
            "overhead_seconds": wall - loop, "overhead_fraction": (wall - loop) / wall,
            "start_to_train_seconds": t.get("start_to_train", float("nan")),
            "setup_seconds": t.get("setup", float("nan")),
            "save_weights_seconds": t.get("save_weights", float("nan")), "timings": t,
            "launcher_seconds": wall - t.get("in_train", float("nan")) - t.get("start_to_train", 0.0),
        }
        o = overhead[name]
        print(f"{name:22s} trial of {steps} steps: wall {wall:.1f} s, step loop {loop:.1f} s, overhead "
              f"{o['overhead_seconds']:.1f} s = {o['overhead_fraction']:.1%} (imports {o['start_to_train_seconds']:.1f} s, "
              f"setup {o['setup_seconds']:.1f} s, save {o['save_weights_seconds']:.1f} s, "
              f"launcher {o['launcher_seconds']:.1f} s)", flush=True)
    if overhead:
        result["trial_overhead"] = overhead

    # 3. Seq2SeqTrainer, one process, same model and data
    if args.hf:
        import torch
        from transformers import Seq2SeqTrainer, Seq2SeqTrainingArguments, TrainerCallback

        from mt5study.model import build

        p = tmp / "hf.yaml"
        p.write_text(yaml.safe_dump(base_doc(args.steps)))
        params = config.load(p, {"run.one_process": True})
        splits = batches.synthetic_splits(params.data, params.run.seed)

        class Timer(TrainerCallback):
            times: list[float] = []

            def on_step_begin(self, a, state, control, **kw):
                self.t0 = time.perf_counter()

            def on_step_end(self, a, state, control, **kw):
                self.times.append(time.perf_counter() - self.t0)

        targs = Seq2SeqTrainingArguments(
            output_dir=str(tmp / "hf"), per_device_train_batch_size=GLOBAL, max_steps=args.steps,
            learning_rate=2e-3, lr_scheduler_type="constant", max_grad_norm=1.0, logging_steps=10**9,
            save_strategy="no", report_to=[], use_cpu=not torch.cuda.is_available(), seed=0,
            dataloader_num_workers=0, disable_tqdm=True)
        timer = Timer()
        Seq2SeqTrainer(model=build(args.preset, vocab_size=VOCAB), args=targs, train_dataset=splits["train"],
                       callbacks=[timer]).train()
        hf = GLOBAL * sum(LENGTHS) * (args.steps - args.warmup) / sum(timer.times[args.warmup:])
        result["tokens_per_second"]["seq2seqtrainer"] = hf
        if speed:
            result["one_process_over_seq2seqtrainer"] = speed["one_process_zero0"] / hf
        print(f"{'seq2seqtrainer':22s} {hf:9,.0f} tokens/s", flush=True)

result["load_average_after"] = os.getloadavg()
out = OUTPUTS / "bench" / f"trainer_{args.preset}_fp32.json"
if (args.only_speed or args.only_overhead) and out.exists():  # keep the other part's figures
    result = {**records.read_json(out), **result}
records.write_json_atomic(out, result)
ov = result.get("trial_overhead", {})
if speed:
    print(f"\ntokens/s: one process {speed['one_process_zero0']:,.0f} / 2-rank ZeRO-3 launch "
          f"{speed['launched_2rank_zero3']:,.0f} = {result['one_process_over_launched']:.2f}x")
print("per-trial overhead fraction: " + ", ".join(f"{k} {v['overhead_fraction']:.1%}" for k, v in ov.items()))
print(f"load average (1, 5, 15 min) before {result['env']['load_average']}, after {result['load_average_after']}")
print(f"written {out}")
