"""The workers axis on this machine: runs at 1 and 2 ranks under ZeRO 0-3, and the step-time
model's error against them.

Each (world size, ZeRO stage) is a real `mt5study launch` through the studies runner (reusable
run folders under steptime/trials/), at the same micro-batch per rank (weak scaling). The model
(mt5study.scaling.steptime) takes its inputs from measurements made now: the matmul FLOP/s at
the threads a rank gets and gloo's all-reduce bandwidth and latency. Every rank of every run gets
the same threads (cores / the largest world size), so a rank's compute is the same work on the
same cores at every world size and the runs differ by what the model says they differ by. Two
numbers are calibrated on 1-rank runs: MFU on ZeRO-0, and, when the runs include [1, 3], the
software cost of one ZeRO-3 module gather; every 2-rank run is then predicted.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from mt5study import config, records
from mt5study.model import count_parameters, flops_per_example
from mt5study.scaling import steptime
from mt5study.scaling.config import ScalingParams
from mt5study.studies import runner
from mt5study.studies.config import resolve


def run_workers(params: ScalingParams, root: Path, redo: bool = False, keep_stale: bool = False) -> pd.DataFrame:
    """Train one short run per (world size, stage); tokens/s, step seconds, peak memory per rank."""
    st = params.scaling.steptime
    base_path = resolve(params.scaling.base)
    threads = rank_threads(st.runs)
    rows = []
    for i, (world, stage) in enumerate(st.runs, 1):
        name = f"world={world}__zero_stage={stage}"
        ov = {"model.preset": st.preset, "run.processes_per_node": world, "run.nodes": 1, "run.zero_stage": stage,
              "run.threads": threads,
              "run.micro_batch": st.micro_batch, "run.grad_accum": 1, "run.global_batch": st.micro_batch * world,
              "run.steps": st.steps, "run.log_every": 1, "run.eval_every": 0, "run.eval_batches": 1,
              "run.checkpoint_every": 0}
        print(f"[{params.scaling.name}] workers {i}/{len(st.runs)} {name}", flush=True)
        out = root / "steptime" / "trials" / name
        summary = runner.run_trial(out, base_path, ov, redo=redo, keep_stale=keep_stale)
        metrics = records.read_metrics(out / "metrics.jsonl")
        cfg = records.read_json(out / "config.json")
        per_example = cfg["data"]["input_length"] + cfg["data"]["target_length"]
        step_s = steptime.median_step_seconds(metrics, st.warmup_steps) if summary.get("status") == "completed" else float("nan")
        peaks = [m.get("peak_memory_bytes_per_rank") or [m.get("peak_memory_bytes")] for m in metrics]
        rows.append({"world_size": world, "zero_stage": stage, "status": summary.get("status"),
                     "step_seconds": step_s, "tokens_per_second": st.micro_batch * world * per_example / step_s,
                     "tokens_per_second_per_rank": st.micro_batch * per_example / step_s,
                     "peak_memory_gib_per_rank": max(max(p) for p in peaks if p) / 2**30 if peaks else float("nan"),
                     "flops_per_step": flops_per_example(st.preset, cfg["data"]["input_length"], cfg["data"]["target_length"],
                                                         cfg["model"].get("vocab_size")) * st.micro_batch * world})
    return pd.DataFrame(rows)


def rank_threads(runs: list[list[int]]) -> int:
    """CPU threads of every rank in every run: the cores shared by the largest world size."""
    return max(1, (os.cpu_count() or 1) // max(w for w, _ in runs))


PEAK_METHOD = "together"  # every rank's matmuls at once (steptime.measure_peak_together)


def measure_inputs(params: ScalingParams, root: Path, worlds: list[int]) -> dict:
    """Peak FLOP/s per rank at the ranks' threads with every rank of a world size computing at once,
    and the gloo link between 2 ranks. Measured right after the workers' runs and kept with them:
    a later render reuses steptime/inputs.json while it is newer than every run of the axis and was
    measured the same way on the same machine (a re-measurement on a busier machine would move every
    predicted step time); a run trained again is measured again."""
    cores = os.cpu_count() or 1
    st = params.scaling.steptime
    threads = rank_threads(st.runs)
    path = root / "steptime" / "inputs.json"
    want = sorted(set(worlds))
    if path.exists():
        old = records.read_json(path)
        summaries = list((root / "steptime" / "trials").glob("*/summary.json"))
        newest = max((f.stat().st_mtime for f in summaries), default=float("inf"))
        if (old.get("peak_method") == PEAK_METHOD and old.get("threads_per_rank") == threads
                and old.get("machine") == records.hardware() and path.stat().st_mtime >= newest
                and sorted(int(k) for k in old.get("peak_flops_per_rank", {})) == want):
            return old
    peak = {w: steptime.measure_peak_together(threads, w) for w in want}
    link = steptime.measure_link(2, st.bench_mib) if any(w > 1 for w in worlds) else {}
    out = {"cores": cores, "threads_per_rank": threads, "peak_method": PEAK_METHOD, "peak_flops_per_rank": peak,
           "link": link, "machine": records.hardware()}
    records.write_json_atomic(path, out)
    return out


def validate(params: ScalingParams, runs: pd.DataFrame, inputs: dict) -> pd.DataFrame:
    """Predicted vs measured step time per run. Calibrated on 1-rank runs: MFU on ZeRO-0 (the first
    run), the software cost of one ZeRO-3 gather on [1, 3] when measured (else 0, which the
    notebook says). `calibrated` marks the runs the model was fitted to, not predicted."""
    st = params.scaling.steptime
    base = config.load(resolve(params.scaling.base), {"model.preset": st.preset})
    n_params = count_parameters(st.preset, base.model.vocab_size)
    modules = steptime.modules_with_parameters(st.preset)
    first = runs.iloc[0]
    peak = {int(k): v for k, v in inputs["peak_flops_per_rank"].items()}
    mfu = first["flops_per_step"] / (first["step_seconds"] * peak[1])
    gather_s = 0.0
    one3 = runs[(runs.world_size == 1) & (runs.zero_stage == 3)]
    if len(one3) and one3["step_seconds"].notna().all():
        r3 = one3.iloc[0]
        compute = first["step_seconds"] * r3["flops_per_step"] / first["flops_per_step"]  # at ZeRO-0's rate
        gather_s = max(0.0, float(r3["step_seconds"] - compute)) / steptime.gathers(modules, 3)
    link = inputs.get("link") or {}
    out = []
    for _, r in runs.iterrows():
        w = int(r["world_size"])
        pred = steptime.predict(r["flops_per_step"], w, peak[w], mfu, n_params, int(r["zero_stage"]),
                                link.get("bandwidth_bytes_per_s", 1.0), st.overlap, base.run.precision,
                                link.get("latency_s", 0.0), modules, gather_s=gather_s)
        out.append({**r.to_dict(), "mfu": mfu, "gather_ms": gather_s * 1e3, "calibrated": w == 1,
                    "predicted_step_seconds": pred["step_s"],
                    "predicted_compute_s": pred["compute_s"], "predicted_comm_s": pred["comm_s"],
                    "predicted_gather_s": pred["gather_s"],
                    "error_percent": (pred["step_s"] / r["step_seconds"] - 1) * 100,
                    "within_tolerance": abs(pred["step_s"] / r["step_seconds"] - 1) <= st.tolerance})
    return pd.DataFrame(out)
