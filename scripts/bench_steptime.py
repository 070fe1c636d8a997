"""The workers axis and the step-time model's error on this machine (a benchmark, not a test).

Trains one short run per (world size, ZeRO stage) of `scaling.steptime` (1 rank ZeRO-0, then
2 ranks ZeRO-0..3, gloo) through the studies runner, measures the CPU's matmul FLOP/s at the
threads each rank gets and gloo's all-reduce bandwidth and latency, calibrates MFU on the 1-rank
run and prints predicted / measured step time for every run. Writes steptime.parquet and
inputs.json under the study folder. Usage:
    python scripts/bench_steptime.py [--params params/cpu/scaling.yaml] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from mt5study.scaling import config as scaling_config
from mt5study.scaling import study, workers

def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--params", default="params/cpu/scaling.yaml")
    ap.add_argument("--out", default=None, help="the study folder (default outputs/<name>)")
    ap.add_argument("--redo", action="store_true", help="retrain runs that already finished")
    args = ap.parse_args()

    params = scaling_config.load(args.params)
    if params.scaling.steptime is None:
        raise SystemExit(f"{args.params}: no scaling.steptime section")
    root = study.study_dir(params, args.out)
    runs = workers.run_workers(params, root, redo=args.redo)
    inputs = workers.measure_inputs(params, root, [int(w) for w in runs["world_size"]])
    table = workers.validate(params, runs, inputs)
    (root / "steptime").mkdir(parents=True, exist_ok=True)
    table.to_parquet(root / "steptime" / "steptime.parquet", index=False)
    link = inputs.get("link") or {}
    print(f"peak fp32 matmul FLOP/s per rank: " + ", ".join(f"{w} rank(s) {v / 1e9:.1f} G" for w, v in inputs["peak_flops_per_rank"].items()))
    if link:
        print(f"gloo all-reduce: {link['bandwidth_bytes_per_s'] / 1e9:.2f} GB/s per rank, latency {link['latency_s'] * 1e6:.0f} us")
    print(f"MFU calibrated on 1 rank: {table['mfu'].iloc[0]:.3f}")
    for _, r in table.iterrows():
        print(f"world {r.world_size} ZeRO-{r.zero_stage}: measured {r.step_seconds:.4f} s/step, predicted "
              f"{r.predicted_step_seconds:.4f} (compute {r.predicted_compute_s:.4f} + comm {r.predicted_comm_s:.4f}), "
              f"ratio {r.predicted_step_seconds / r.step_seconds:.3f}, {r.tokens_per_second:.0f} tokens/s, "
              f"peak {r.peak_memory_gib_per_rank:.2f} GiB/rank")
    print(f"written: {Path(root) / 'steptime'}")


if __name__ == "__main__":  # the gloo benchmark spawns processes that import this file
    main()
