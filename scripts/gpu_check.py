"""The GPU check: what a CPU cannot show, on one H100 or H200, in at most 8 minutes.

Run it as `scripts/gpu_check.sh` (never in CI). Each part is a real `mt5study launch` of params
written here (one process, world size 1), under its own timeout so that a hang costs only its part:

- bf16_zero3, bf16_zero0: the released mt5-base architecture (582M parameters, 250,112-token
  head) in bf16 under ZeRO-3 and ZeRO-0: model FLOPs utilisation against the device's dense 16-bit
  peak, the allocator's peak (torch.cuda.max_memory_allocated, which train.py records) against
  `mt5study.memory.estimate` (this checks the activation term, which CPU RSS cannot), and the
  largest difference between the two loss curves (same seed, same data, same initial weights).
- fp16_zero3: DeepSpeed's fp16 engine with dynamic loss scaling: the loss scale per step, skipped
  (overflowed) steps, and whether the run diverged.
- span_corruption: a short bf16 ZeRO-3 run on span-corrupted text (an ETL output: --etl DIR,
  else outputs/gpu_check/etl, else made here from params/cpu/etl_smoke.yaml).

One JSON is (re)written after every part, so a part that fails or a kill leaves what was measured
($OUT/gpu_check.json when OUT is set, else outputs/gpu_check/gpu_check.json), with a log of each
part's last output lines beside it. `--dry-run` writes and validates the params and the plan and
launches nothing (no GPU needed: tests/test_gpu_check.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from mt5study import config, memory, model as model_lib, records  # noqa: E402

BUDGET_S = 465  # the whole check, seconds (gpu_check.sh kills at 480)
# Dense (no sparsity) bf16/fp16 tensor-core peaks, TFLOP/s per device (NVIDIA datasheets: H100 SXM
# and H200 989, H100 PCIe 756, A100 312). Matched on torch.cuda.get_device_name, first hit wins.
PEAK_TFLOPS_16BIT = (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0))
PRESET = "mt5-base"
INPUT_LENGTH, TARGET_LENGTH = 512, 114  # T5's span-corruption shapes for 512 input tokens
# --smoke: the same flow at the `tiny` preset, a few steps, runnable on a CPU (tests/test_gpu_check.py)
SMOKE = {"preset": "tiny", "input_length": 32, "target_length": 8, "steps": 3, "micro_batch": 2, "vocab": 512}
# (name, precision, zero stage, steps, timeout in seconds); the order is the order of importance.
PARTS = (
    ("bf16_zero3", "bf16", 3, 40, 120),
    ("bf16_zero0", "bf16", 0, 40, 100),
    ("fp16_zero3", "fp16", 3, 40, 100),
    ("span_corruption", "bf16", 3, 60, 90),
)
ETL_PARAMS = ROOT / "params" / "cpu" / "etl_smoke.yaml"
ETL_TIMEOUT_S = 90


def peak_tflops(device_name: str) -> float | None:
    """The dense 16-bit peak of a device from its name, or None if it is not in the table."""
    return next((v for k, v in PEAK_TFLOPS_16BIT if k in device_name), None)


def micro_batch_for(device_bytes: int) -> int:
    """The largest of 32/16/8 examples whose estimated ZeRO-0 bf16 need is under 60 % of the device."""
    for mb in (32, 16, 8):
        if memory.estimate(PRESET, 0, "bf16", 1, mb, INPUT_LENGTH, TARGET_LENGTH)["total"] < 0.6 * device_bytes:
            return mb
    return 4


def part_params(name: str, precision: str, zero: int, steps: int, micro_batch: int, peak: float | None,
                etl: dict[str, Any] | None = None, smoke: bool = False) -> dict[str, Any]:
    """The params document of one part (validated by mt5study.config before it is written)."""
    preset = SMOKE["preset"] if smoke else PRESET
    if smoke:
        steps, micro_batch = SMOKE["steps"], SMOKE["micro_batch"]
    if etl is None:  # synthetic tokens, the released vocabulary
        lengths = (SMOKE["input_length"], SMOKE["target_length"]) if smoke else (INPUT_LENGTH, TARGET_LENGTH)
        data: dict[str, Any] = {"synthetic": {"num_train": 4096, "num_validation": 64,
                                              "vocab_size": SMOKE["vocab"] if smoke else 32000},
                                "input_length": lengths[0], "target_length": lengths[1]}
        model: dict[str, Any] = {"preset": preset, "vocab_size": SMOKE["vocab"] if smoke else model_lib.MT5_VOCAB}
    else:  # the ETL's tokenizer decides the vocabulary (model.vocab_size unset)
        data = {"path": etl["path"], "input_length": etl["inputs_length"], "target_length": etl["targets_length"]}
        model = {"preset": preset}
    run: dict[str, Any] = {
        "seed": 0, "steps": steps, "micro_batch": micro_batch, "grad_accum": 1, "processes_per_node": 1,
        "precision": precision, "zero_stage": zero, "log_every": 1, "eval_every": 0, "eval_batches": 1,
        "checkpoint_every": 0,
    }
    if peak is not None:
        run["peak_tflops_per_device"] = peak
    return {"model": model, "data": data,
            "optim": {"name": "adamw", "lr": 3.0e-4, "schedule": "constant", "warmup_steps": 5, "grad_clip": 1.0},
            "run": run}


def write_params(doc: dict[str, Any], path: Path) -> Path:
    """Write a params file and load it back through mt5study.config (a bad one fails here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# written by scripts/gpu_check.py\n{yaml.safe_dump(doc, sort_keys=False)}")
    config.load(path)
    return path


def estimate(doc: dict[str, Any]) -> dict[str, int]:
    r, d = doc["run"], doc["data"]
    return memory.estimate(doc["model"]["preset"], r["zero_stage"], r["precision"], 1, r["micro_batch"],
                           d["input_length"], d["target_length"])


def find_etl(arg: str | None) -> Path | None:
    for p in ([Path(arg)] if arg else []) + [ROOT / "outputs" / "gpu_check" / "etl"]:
        if (p / "manifest.json").is_file():
            return p.resolve()
    return None


def etl_shape(path: Path) -> dict[str, Any]:
    m = records.read_json(path / "manifest.json")
    return {"path": str(path), "inputs_length": int(m["inputs_length"]), "targets_length": int(m["targets_length"]),
            "vocab_size": int(m["vocab_size"])}


def run_command(cmd: list[str], timeout_s: float, log) -> tuple[int | None, float, str]:
    """Run in its own process group; on timeout the whole group is killed. (code|None, seconds, tail)."""
    t0 = time.perf_counter()
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with tempfile.TemporaryFile(mode="w+") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code: int | None = proc.wait(timeout=max(1.0, timeout_s))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            code = None
        out.seek(0)
        tail = out.read()[-3000:]
    log.write(f"$ {' '.join(cmd)}\n{tail}\n\n")
    log.flush()
    return code, time.perf_counter() - t0, tail


def summarise(run_dir: Path, doc: dict[str, Any]) -> dict[str, Any]:
    """The part's figures from its run folder (summary.json, metrics.jsonl)."""
    out: dict[str, Any] = {}
    summary_path, metrics_path = run_dir / "summary.json", run_dir / "metrics.jsonl"
    summary = records.read_json(summary_path) if summary_path.exists() else {}
    rows = records.read_metrics(metrics_path) if metrics_path.exists() else []
    out["run_status"] = summary.get("status")
    for k in ("error", "reason", "diverged_at_step", "final_train_loss", "final_eval_loss", "tokens_per_second",
              "skipped_steps", "wall_seconds"):
        if k in summary:
            out[k] = summary[k]
    out["losses"] = [r["loss"] for r in rows]
    steady = rows[5:] or rows  # the first steps include compilation and allocator warm-up
    if steady:
        out["step_seconds_median"] = statistics.median(r["step_seconds"] for r in steady)
        mfus = [r["mfu"] for r in steady if r.get("mfu") is not None]
        out["mfu_median"] = statistics.median(mfus) if mfus else None
    peak = summary.get("peak_memory_bytes") or max((r.get("peak_memory_bytes") or 0 for r in rows), default=0)
    est = estimate(doc)
    out["peak_memory_bytes"] = peak or None
    out["memory_estimate_bytes"] = est
    out["peak_over_estimate"] = peak / est["total"] if peak else None
    if doc["run"]["precision"] == "fp16":
        out["loss_scale"] = [r.get("loss_scale") for r in rows]
        out["overflowed"] = bool(summary.get("skipped_steps") or any(r.get("skipped_steps") for r in rows))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="folder of gpu_check.json (default: $OUT, else outputs/gpu_check)")
    ap.add_argument("--etl", help="ETL output folder for the span-corruption part")
    ap.add_argument("--dry-run", action="store_true", help="write and validate the params and the plan; launch nothing")
    ap.add_argument("--device-name", help="override the detected device name (peak lookup; dry runs)")
    ap.add_argument("--budget-s", type=float, default=BUDGET_S, help="seconds for the whole check")
    ap.add_argument("--parts", nargs="+", choices=[p[0] for p in PARTS], help="run only these parts")
    ap.add_argument("--smoke", action="store_true", help="the tiny preset, a few steps; runs on a CPU (tests)")
    a = ap.parse_args(argv)
    t_start = time.perf_counter()
    out = Path(a.out or os.environ.get("OUT") or ROOT / "outputs" / "gpu_check")
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="gpu_check_"))  # run folders: GBs of checkpoints, not in out
    params_dir = out / "params" if a.dry_run else work / "params"

    import torch

    cuda = torch.cuda.is_available()
    name = a.device_name or (torch.cuda.get_device_name(0) if cuda else "cpu")
    device_bytes = torch.cuda.get_device_properties(0).total_memory if cuda else 80 * 2**30
    peak = peak_tflops(name)
    report: dict[str, Any] = {
        "check": "scripts/gpu_check.sh", "dry_run": a.dry_run, "complete": False,
        "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "device": {"name": name, "memory_bytes": device_bytes, "peak_tflops_16bit": peak, "cuda": cuda,
                   # train.py's peak_memory_bytes: the CUDA allocator's peak, or the process RSS on a CPU
                   "peak_memory_is": "torch.cuda.max_memory_allocated" if cuda else "host RSS"},
        "environment": records.environment(), "budget_s": a.budget_s, "smoke": a.smoke, "parts": {},
    }
    result_path = out / "gpu_check.json"

    def save() -> None:
        records.write_json_atomic(result_path, report)

    if not cuda and not a.dry_run and not a.smoke:
        report["error"] = "no CUDA device: run it on a GPU machine, or pass --dry-run"
        save()
        print(report["error"], file=sys.stderr)
        return 2
    mb = micro_batch_for(device_bytes)
    etl_dir = find_etl(a.etl)
    log = open(out / "gpu_check.log", "a", encoding="utf-8")
    for part, precision, zero, steps, timeout_s in PARTS:
        if a.parts and part not in a.parts:
            continue
        entry: dict[str, Any] = report["parts"].setdefault(part, {})
        etl = None
        if part == "span_corruption":
            if etl_dir is None and not a.dry_run:  # make one: real text, span-corrupted by mt5study etl
                remaining = a.budget_s - (time.perf_counter() - t_start)
                code, secs, tail = run_command([sys.executable, "-m", "mt5study.cli", "etl", "--params",
                                                str(ETL_PARAMS), "--out", str(work / "etl")],
                                               min(ETL_TIMEOUT_S, remaining - 30), log)
                entry["etl"] = {"params": str(ETL_PARAMS.relative_to(ROOT)), "exit_code": code, "seconds": secs}
                etl_dir = find_etl(str(work / "etl"))
            if etl_dir is None:
                entry.update(status="skipped" if not a.dry_run else "planned",
                             reason="no ETL output: pass --etl DIR, or let the run make one from "
                                    f"{ETL_PARAMS.relative_to(ROOT)} (needs the manual pages)")
                save()
                continue
            etl = etl_shape(etl_dir)
            entry["etl_data"] = etl
        doc = part_params(part, precision, zero, steps, mb, peak, etl, smoke=a.smoke)
        params_path = write_params(doc, params_dir / f"{part}.yaml")
        run_dir = work / "runs" / part
        cmd = [sys.executable, "-m", "mt5study.cli", "launch", "--params", str(params_path), "--out", str(run_dir)]
        entry.update(params=doc, timeout_s=timeout_s, memory_estimate_bytes=estimate(doc))
        if a.dry_run:
            entry.update(status="planned", command=cmd)
            save()
            continue
        remaining = a.budget_s - (time.perf_counter() - t_start) - 5
        if remaining < 30:
            entry.update(status="skipped", reason=f"out of time ({remaining:.0f} s left of {a.budget_s:.0f})")
            save()
            continue
        entry["status"] = "running"  # what a kill from outside leaves behind
        save()
        if a.smoke:  # a shared CPU: the launch's imports alone can take a minute
            timeout_s *= 3
        code, secs, tail = run_command(cmd, min(timeout_s, remaining), log)
        entry.update(exit_code=code, wall_s=secs, **summarise(run_dir, doc))
        entry["status"] = "timeout" if code is None else ("completed" if entry.get("run_status") == "completed" else "failed")
        if entry["status"] != "completed":
            entry["output_tail"] = tail[-1500:]
        save()
        subprocess.run(["rm", "-rf", str(run_dir)], check=False)  # checkpoints: GBs per part
    log.close()

    z3, z0 = report["parts"].get("bf16_zero3", {}), report["parts"].get("bf16_zero0", {})
    if z3.get("losses") and z0.get("losses"):
        n = min(len(z3["losses"]), len(z0["losses"]))
        report["bf16_zero0_vs_zero3_max_abs_loss_diff"] = max(abs(x - y) for x, y in zip(z3["losses"][:n], z0["losses"][:n]))
    report["wall_s"] = time.perf_counter() - t_start
    report["complete"] = all(p.get("status") in ("completed", "planned") for p in report["parts"].values())
    save()
    subprocess.run(["rm", "-rf", str(work)], check=False)
    print(json.dumps({k: v.get("status") for k, v in report["parts"].items()}), f"-> {result_path}")
    return 0 if report["complete"] else 1


if __name__ == "__main__":
    sys.exit(main())
