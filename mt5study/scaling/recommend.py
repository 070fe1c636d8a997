"""The recipe a reader takes to the cluster: per mt5-* preset, eta*, B* and tokens from the fitted
laws (with intervals, extrapolations marked), the micro-batch that fits each GPU (memory.estimate,
bf16, activation checkpointing), the ZeRO stage and offload, GPUs needed, and predicted days on
N nodes (the step-time model with the device's peak, an assumed MFU, NVLink within a node and
InfiniBand between nodes)."""

from __future__ import annotations

import math

import pandas as pd

from mt5study import memory
from mt5study.model import count_parameters, flops_per_example
from mt5study.scaling import steptime
from mt5study.scaling.budget import flops_per_token, non_embedding_parameters

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
MICRO_BATCHES = (1, 2, 4, 8, 16, 32, 64)
USABLE = 0.9  # of device memory: the rest for the CUDA context, NCCL and fragmentation (memory.fits_table)
PLANS = [(0, None), (1, None), (2, None), (3, None), (3, "optimizer"), (3, "optimizer+params")]


def _fits(preset: str, stage: int, offload, n: int, micro: int, rc, mem_gib: float) -> bool:
    est = memory.estimate(preset, stage, rc.precision, n, micro, rc.input_length, rc.target_length,
                          offload, activation_checkpointing=True)
    return est["total"] <= USABLE * mem_gib * memory.GIB


def plan(preset: str, rc, mem_gib: float, n_gpus: int | None = None) -> dict | None:
    """The plan that fits with the fewest GPUs (or at `n_gpus`) and the lowest ZeRO stage, offload
    only when no GPU count fits without it (offload trades GPUs for host memory and PCIe time),
    with the largest micro-batch; None when nothing fits."""
    for allowed in ((None,), ("optimizer", "optimizer+params")):
        for n in ([n_gpus] if n_gpus else GPU_COUNTS):
            for stage, off in PLANS:
                if off not in allowed or not _fits(preset, stage, off, n, 1, rc, mem_gib):
                    continue
                micro = max(m for m in MICRO_BATCHES if m == 1 or _fits(preset, stage, off, n, m, rc, mem_gib))
                return {"gpus": n, "zero_stage": stage, "offload": off or "none", "micro_batch": micro}
    return None


def recommend(rc, laws: dict, lr_x: str, batch_x: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(summary per preset, days per preset x device x nodes)."""
    per_example = rc.input_length + rc.target_length
    rows, days = [], []
    for preset in rc.presets:
        n_ne = non_embedding_parameters(preset)
        fpt = flops_per_token(preset, rc.input_length, rc.target_length)
        xs = {"parameters": n_ne, "tokens": rc.tokens, "compute": rc.tokens * fpt}
        lr, bt = laws["lr"].predict(xs[lr_x]), laws["batch_tokens"].predict(xs[batch_x])
        batch = max(1, round(bt["value"] / per_example))
        row = {"preset": preset, "parameters": count_parameters(preset), "non_embedding": n_ne,
               "tokens": rc.tokens, "lr": lr["value"], "lr_low": lr["low"], "lr_high": lr["high"],
               "batch": batch, "batch_low": bt["low"] / per_example, "batch_high": bt["high"] / per_example,
               "batch_tokens": bt["value"], "extrapolation": lr["extrapolation"] or bt["extrapolation"]}
        for name, dev in rc.devices.items():
            p = plan(preset, rc, dev.memory_gib)
            row.update({f"{name}_gpus": p and p["gpus"], f"{name}_micro_batch": p and p["micro_batch"],
                        f"{name}_zero": p and f"{p['zero_stage']}/{p['offload']}"})
            for nodes in rc.nodes:
                days.append(_days(preset, rc, dev, name, nodes, batch, p))
        rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(days)


def _days(preset, rc, dev, name, nodes, batch, needed) -> dict:
    n = nodes * dev.gpus_per_node
    out = {"preset": preset, "device": name, "nodes": nodes, "gpus": n, "days": math.nan,
           "zero_stage": None, "micro_batch": None, "note": ""}
    if needed is None or n < needed["gpus"]:
        out["note"] = f"needs >= {needed['gpus'] if needed else '>512'} GPUs"
        return out
    p = plan(preset, rc, dev.memory_gib, n)
    global_batch = max(batch, n)  # at least one example per GPU
    micro = min(p["micro_batch"], max(1, global_batch // n))
    accum = math.ceil(global_batch / (n * micro))
    per_example = rc.input_length + rc.target_length
    flops = flops_per_example(preset, rc.input_length, rc.target_length) * n * micro * accum
    bw = (dev.intra_node_gbps if nodes == 1 else dev.inter_node_gbps) * 1e9
    t = steptime.predict(flops, n, dev.peak_tflops * 1e12, rc.mfu, count_parameters(preset), p["zero_stage"],
                         bw, rc.overlap, rc.precision, micro_steps=accum)
    steps = rc.tokens / (n * micro * accum * per_example)
    out.update(days=steps * t["step_s"] / 86400, zero_stage=f"{p['zero_stage']}/{p['offload']}", micro_batch=micro,
               grad_accum=accum, step_seconds=t["step_s"])
    return out
