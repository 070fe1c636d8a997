"""Step time against devices and ZeRO stage: the model, and what measures its inputs here.

The model (`predict`): one optimizer step takes
    compute  = FLOPs per step / (devices x peak FLOP/s per device x MFU)
    comm     = bytes each device sends per step / link bandwidth + collectives x latency
    gathers  = ZeRO-3 module gathers per step x software cost of one gather
    step     = compute + (1 - overlap) x comm + gathers
Bytes per step (Rajbhandari et al. 2020, ZeRO, sec. 7): plain data parallelism and ZeRO-1/2
move 2 x Psi elements per step (gradient reduce-scatter + all-gather: one all-reduce), ZeRO-3
3 x Psi (parameters all-gathered in forward and again in backward, gradients reduce-scattered),
each a ring collective in which a device sends (n - 1) / n of the data per pass, in the
communication dtype. ZeRO-2 and -3 communicate per micro-batch, 0 and 1 per optimizer step.

ZeRO-3 fetches every module's parameters before its forward and again before its backward, and
releases them after: DeepSpeed's hooks, partition bookkeeping and the (re)allocation of the
gathered tensor cost time at any world size, communication or not. That software cost per gather
is the `gathers` term; on a GPU it hides partly behind the prefetch stream, on 2 CPU processes
it does not (measured 2026-11-30, ladder-4: the 2-rank ZeRO-3 step was 2.4x the ZeRO-0 one, and
the bytes and latency explain about an eighth of the difference).

Measured here (`measure_peak_together`, `measure_link`): the CPU's matmul FLOP/s at the threads a
rank gets, with as many processes computing at once as the world size has ranks, and gloo's
all-reduce bandwidth and latency between two processes. `validate` calibrates
two numbers on 1-rank runs, MFU on ZeRO-0 and the cost of one gather on ZeRO-3, and predicts
every 2-rank run from the model.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np

# Elements communicated per parameter per step, by ZeRO stage (ZeRO paper, sec. 7).
ELEMENTS_PER_PARAM = {0: 2, 1: 2, 2: 2, 3: 3}
BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}


def comm_bytes(n_params: int, zero_stage: int, devices: int, precision: str = "fp32",
               micro_steps: int = 1) -> float:
    """Bytes one device sends per optimizer step (ring collectives: (n-1)/n of the volume)."""
    if devices <= 1:
        return 0.0
    passes = micro_steps if zero_stage >= 2 else 1
    return ELEMENTS_PER_PARAM[zero_stage] * n_params * BYTES[precision] * (devices - 1) / devices * passes


def collectives(n_modules: int, zero_stage: int, devices: int, micro_steps: int = 1) -> int:
    """Collective calls per step: one bucketed all-reduce (0), reduce-scatter + all-gather (1, 2),
    and under ZeRO-3 one all-gather per module with parameters in forward and in backward."""
    if devices <= 1:
        return 0
    per_micro = {0: 0, 1: 0, 2: 1, 3: 2 * n_modules + 1}[zero_stage]
    per_step = {0: 1, 1: 2, 2: 1, 3: 0}[zero_stage]
    return per_micro * micro_steps + per_step


def gathers(n_modules: int, zero_stage: int, micro_steps: int = 1) -> int:
    """ZeRO-3 module gathers per optimizer step (forward and backward of every module with
    parameters, per micro-batch) at any world size; none below stage 3."""
    return 2 * n_modules * micro_steps if zero_stage == 3 else 0


def predict(flops_per_step: float, devices: int, peak_flops: float, mfu: float, n_params: int,
            zero_stage: int, bandwidth: float, overlap: float = 0.0, precision: str = "fp32",
            latency: float = 0.0, n_modules: int = 0, micro_steps: int = 1,
            gather_s: float = 0.0) -> dict[str, float]:
    """Seconds per optimizer step: compute, communication, ZeRO-3's gathers and their sum.

    peak_flops: FLOP/s of one device; bandwidth: bytes/s per device; latency: s per collective;
    gather_s: s of software per ZeRO-3 module gather (not hidden by `overlap`: it runs on the
    step's own thread).
    """
    compute = flops_per_step / (devices * peak_flops * mfu)
    comm = (comm_bytes(n_params, zero_stage, devices, precision, micro_steps) / bandwidth
            + collectives(n_modules, zero_stage, devices, micro_steps) * latency)
    gather = gathers(n_modules, zero_stage, micro_steps) * gather_s
    return {"compute_s": compute, "comm_s": comm, "gather_s": gather,
            "step_s": compute + (1 - overlap) * comm + gather}


def modules_with_parameters(preset: str) -> int:
    """Modules holding parameters of their own (what ZeRO-3 gathers one at a time), from the meta model."""
    from mt5study.model import build

    net = build(preset, device="meta", init="hf")
    return sum(1 for m in net.modules() if any(True for _ in m.parameters(recurse=False)))


# Measuring the inputs on this machine -------------------------------------------------------

def measure_peak(threads: int, size: int = 1024, seconds: float = 1.5) -> float:
    """Dense fp32 matmul FLOP/s with `threads` torch threads (the best of repeated timings)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(size, size), torch.randn(size, size)
        for _ in range(3):
            a @ b  # warm-up
        best, t_end = 0.0, time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            t0 = time.perf_counter()
            for _ in range(4):
                a @ b
            best = max(best, 4 * 2 * size**3 / (time.perf_counter() - t0))
        return best
    finally:
        torch.set_num_threads(before)


def _peak_worker(rank: int, threads: int, barrier, out: str) -> None:
    import json

    barrier.wait()  # every process starts its matmuls together: each measures under the others' load
    Path(out, f"{rank}.json").write_text(json.dumps(measure_peak(threads)))


def measure_peak_together(threads: int, world: int) -> float:
    """Matmul FLOP/s per rank while `world` processes, `threads` threads each, all run matmuls at
    once (the mean over them): what a rank computes when every rank computes. One process alone
    can overstate it where the cores share a clock budget, caches or memory bandwidth (on the 2-vCPU
    Xeon VM of 2026-12-01 the two agree to 1 %: 167-169 GFLOP/s per rank at one thread)."""
    if world == 1:
        return measure_peak(threads)
    import json
    import multiprocessing
    import tempfile

    import torch.multiprocessing as mp

    from mt5study.trial_process import main_hidden

    ctx = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp, main_hidden():
        mp.start_processes(_peak_worker, args=(threads, ctx.Barrier(world), tmp), nprocs=world, join=True,
                           start_method="spawn")
        return float(np.mean([json.loads(Path(tmp, f"{r}.json").read_text()) for r in range(world)]))


def _link_worker(rank: int, world: int, port: int, nbytes: int, repeats: int, out: str) -> None:
    import json

    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        def timed(t: torch.Tensor, n: int) -> float:
            dist.barrier()
            times = []
            for _ in range(n):
                t0 = time.perf_counter()
                dist.all_reduce(t)
                times.append(time.perf_counter() - t0)
            return float(np.median(times))

        big = torch.ones(nbytes // 4)
        timed(big, 2)  # warm-up (connections, buffers)
        t_big = timed(big, repeats)
        t_small = timed(torch.ones(1), 50)
        if rank == 0:
            sent = 2 * (world - 1) / world * nbytes  # a ring all-reduce: reduce-scatter + all-gather
            Path(out).write_text(json.dumps({"bandwidth_bytes_per_s": sent / t_big, "latency_s": t_small,
                                             "bytes": nbytes, "seconds": t_big}))
    finally:
        dist.destroy_process_group()


def measure_link(world: int = 2, mib: float = 16.0, repeats: int = 10) -> dict[str, float]:
    """gloo all-reduce bandwidth (bytes each rank sends per second) and latency between `world`
    processes on this host: the link of the CPU step-time model."""
    import json
    import tempfile

    import torch.multiprocessing as mp

    from mt5study.launch import free_port
    from mt5study.trial_process import main_hidden

    with tempfile.TemporaryDirectory() as tmp, main_hidden():  # spawn: the caller's script is not re-run
        out = os.path.join(tmp, "link.json")
        mp.start_processes(_link_worker, args=(world, free_port(), int(mib * 2**20), repeats, out),
                           nprocs=world, join=True, start_method="spawn")
        return json.loads(Path(out).read_text())


def median_step_seconds(metrics: list[dict], warmup: int) -> float:
    """Median seconds per optimizer step after the first `warmup` logged steps."""
    times = [m["step_seconds"] for m in metrics if m.get("step_seconds") and m["step"] > warmup]
    if not times:
        raise ValueError(f"no step times after step {warmup}")
    return float(np.median(times))
