"""Trials one at a time (every core to one process) against side by side (`study.concurrency`,
one thread each): wall time of the same small grid, and how far the final losses move.

    .venv/bin/python scripts/bench_concurrency.py --preset mini --trials 4 --steps 30

Each mode trains the same grid of `--trials` learning rates on the ETL data of params/cpu/mini.yaml
(outputs/etl, else synthetic data) in a fresh temporary folder; the ratio printed is
(one at a time) / (side by side). Losses differ only by the rounding of another thread count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from mt5study import config
from mt5study.paths import OUTPUTS, PARAMS
from mt5study.records import environment, write_json_atomic
from mt5study.studies import runner
from mt5study.studies.config import StudyParams


def grid_seconds(preset: str, trials: int, steps: int, concurrency: int, threads: int | None, folder: Path,
                 synthetic: bool) -> tuple[float, list[float]]:
    base = PARAMS / "cpu" / "mini.yaml"
    tokens_per_step = 16 * (64 + 14)
    fixed = {"model.preset": preset, "run.one_process": True, "run.eval_every": 0, "run.log_every": 5,
             "run.checkpoint_every": 0, "optim.warmup_steps": 2}
    if threads:
        fixed["run.threads"] = threads
    if synthetic:
        fixed.update({"data.path": None, "data.synthetic": {"num_train": 2048, "num_validation": 64, "vocab_size": 8000}})
    lrs = [round(1e-3 * 2 ** k, 6) for k in range(trials)]
    study = config.validate({"study": {"name": "bench", "base": str(base), "axes": {"optim.lr": lrs},
                                       "budget_tokens": tokens_per_step * steps, "concurrency": concurrency,
                                       "fixed": fixed}}, "bench", StudyParams)
    t = time.perf_counter()
    table = runner.run_grid(study, "bench", folder)
    seconds = time.perf_counter() - t
    if set(table["status"]) != {"completed"}:
        raise SystemExit(f"a trial did not complete: {table[['status', 'error']].to_string()}")
    return seconds, [float(v) for v in table["final_eval_loss"]]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="mini")
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", type=Path, default=OUTPUTS / "bench" / "concurrency.json")
    a = ap.parse_args(argv)
    cores = os.cpu_count() or 1
    synthetic = not (OUTPUTS / "etl" / "manifest.json").exists()
    tmp = Path(tempfile.mkdtemp(prefix="bench_concurrency_"))
    try:
        load_before = os.getloadavg()
        alone_s, alone = grid_seconds(a.preset, a.trials, a.steps, 1, None, tmp / "alone", synthetic)
        side_s, side = grid_seconds(a.preset, a.trials, a.steps, cores, 1, tmp / "side", synthetic)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result = {
        "preset": a.preset, "trials": a.trials, "steps": a.steps, "cores": cores, "synthetic_data": synthetic,
        "one_at_a_time": {"threads": f"all ({cores})", "seconds": round(alone_s, 2), "final_eval_loss": alone},
        "side_by_side": {"concurrency": cores, "threads": 1, "seconds": round(side_s, 2), "final_eval_loss": side},
        "speedup": round(alone_s / side_s, 3),
        "largest_loss_difference": max(abs(x - y) for x, y in zip(alone, side)),
        "load_average_before": list(load_before), "load_average_after": list(os.getloadavg()),
        "environment": environment(),
    }
    print(json.dumps({k: v for k, v in result.items() if k != "environment"}, indent=2))
    print(f"one at a time {alone_s:.1f} s, side by side {side_s:.1f} s: {result['speedup']:.2f}x", file=sys.stderr)
    write_json_atomic(a.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
