"""The training run: one process per device under `accelerate launch`, DeepSpeed ZeRO 0-3.

Reads as a recipe (`train`): check the input (a resume's checkpoint against the params) ->
accelerator -> data -> model, partitioned as it is created under ZeRO-3 -> optimizer, schedule and
`accelerator.prepare` -> restore a checkpoint (converted if written at another world size) ->
prepare the run folder -> step loop -> final evaluation, weights and summary.json (written last).
Bad input is refused before the run folder is touched.

A world of one needs no launcher: started as a plain process (`mt5study train`, or
`launch.run` at world size 1) the trainer sets up its own 1-process group and runs the same
engine. fp16 on CPU, which DeepSpeed's CPU accelerator refuses, runs at ZeRO-0 through torch AMP
(`mt5study.amp`). A non-finite loss, or fp16 steps skipped for overflow run.fp16_max_skipped_steps
times in a row, end the run as `diverged` (summary.json: status, diverged_at_step, reason).
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from mt5study import batches, checkpoints, config, jit_locks, launch, loss as loss_lib, model as model_lib, partition, records
from mt5study.amp import AmpEngine
from mt5study.checkpoints import CHECKPOINTS, STATE_FILE, latest as latest_checkpoint
from mt5study.config import TrainParams
from mt5study.launch import EXIT_CONFIG, EXIT_OK, deepspeed_config
from mt5study.optim import build_optimizer, build_scheduler

__all__ = ["CHECKPOINTS", "STATE_FILE", "RunExists", "latest_checkpoint", "prepare_folder", "train"]


class RunExists(RuntimeError):
    """The output folder already holds a completed run."""


def _peak_memory_bytes(device: torch.device) -> int:
    """The GPU allocator's peak, or this process's peak resident set on CPU."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


class _Stop:
    """Set by SIGUSR1/SIGTERM (Slurm's warning before the limit, or preemption)."""

    def __init__(self) -> None:
        self.requested = False
        for sig in (signal.SIGUSR1, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:  # noqa: ARG002
        self.requested = True


def refuse_completed(out: Path, overwrite: bool) -> None:
    """Raise RunExists for a folder holding a completed run, unless overwriting (writes nothing)."""
    summary = out / "summary.json"
    if summary.exists() and not overwrite and records.read_json(summary).get("status") == "completed":
        raise RunExists(f"{out} holds a completed run; pass --overwrite to replace it")


def prepare_folder(out: Path, params: TrainParams, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a completed run; clear a stale one unless resuming."""
    refuse_completed(out, overwrite)
    (out / "summary.json").unlink(missing_ok=True)  # a new attempt: the old summary no longer describes it
    if overwrite or not resume:
        for name in ("metrics.jsonl", "model", CHECKPOINTS):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


@dataclass
class _Run:
    """What the step loop works with: built once by `_build`, restored by `_restore`."""

    accelerator: Any
    params: TrainParams
    out: Path
    t_start: float
    kind: str = "deepspeed"  # the engine: "deepspeed", or "torch_amp" (fp16 on CPU, mt5study.amp)
    standalone: bool = False  # one process started without a launcher: it exits with its status's code
    engine: Any = None  # what the loss is computed through: DeepSpeedEngine or AmpEngine
    model: Any = None  # what Accelerate prepared (the DeepSpeedEngine, or the plain/DDP model)
    scheduler: Any = None
    splits: dict[str, Any] = field(default_factory=dict)
    vocab: int = 0
    start_step: int = 0
    start_example: int = 0  # position in the example stream where this attempt starts
    tokens_seen: int = 0
    prior_wall: float = 0.0  # seconds spent by earlier attempts of a resumed run
    stopper: _Stop | None = None  # set on SIGUSR1/SIGTERM: checkpoint and stop after the step
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase of this attempt
    t_entry: float = 0.0  # perf_counter when train() was called

    @property
    def amp(self) -> bool:
        return self.kind == "torch_amp"

    @property
    def main(self) -> bool:
        return self.accelerator.is_main_process

    def finish(self, status: str, **fields: Any) -> int:
        """Write summary.json (last) and return the rank's exit code."""
        if self.main:
            self.timings["in_train"] = time.perf_counter() - self.t_entry  # this process's train() call
            summary = {"status": status, "world_size": self.accelerator.num_processes, **fields,
                       "engine": self.kind, "launcher": "none" if self.standalone else "accelerate",
                       "threads": torch.get_num_threads(),  # CPU threads of this rank's kernels
                       "timings_seconds": self.timings,
                       "wall_seconds": time.perf_counter() - self.t_start + self.prior_wall}
            if self.params.run.precision == "fp16":
                summary["fp16_engine"] = self.kind
            records.write_json_atomic(self.out / "summary.json", summary)
        self.accelerator.wait_for_everyone()
        # A launched rank exits 0 when a result was recorded (torchrun counts any other code as a
        # crash; `mt5study launch` maps the summary's status to its exit code). One process
        # without a launcher is the whole launch: it exits with the status's code itself.
        return launch.status_exit_code(status) if self.standalone else EXIT_OK


def train(params: TrainParams, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          stop_at_step: int | None = None) -> int:
    """Run training in this process (one rank of the launch); return the process exit code."""
    t_entry = time.perf_counter()
    out = Path(out_dir)
    run = params.run
    # From here on a SIGUSR1/SIGTERM is kept, not lost: the ranks start with SIGUSR1 ignored
    # (launch.call_forwarding_signals), so a warning during start-up would otherwise vanish.
    stopper = _Stop()
    if run.threads:
        torch.set_num_threads(run.threads)  # before any kernel runs (the forkserver has run none)
    # Bad input first: nothing below writes to `out` until the folder is prepared.
    refuse_completed(out, overwrite)
    checkpoints.check_pretrained(params)
    plan = checkpoints.plan_resume(out, params) if resume and not overwrite else None
    standalone = not launch.launched()
    if standalone:
        if run.world_size != 1:
            print(f"mt5study train: run.nodes x run.processes_per_node = {run.world_size} processes need a "
                  "launcher: run `mt5study launch` with the same arguments (one process runs without one)",
                  file=sys.stderr)
            return EXIT_CONFIG
        launch.become_world_of_one()  # a 1-process group, set up by Accelerate/DeepSpeed as when launched
    kind, unsupported = _engine_kind(run)
    ds_config = deepspeed_config(params)
    if plan is not None and plan.universal:
        ds_config["checkpoint"] = {"load_universal": True}  # DeepSpeed reshapes shards to this world
    jit_locks.clear_stale_cpu()  # a build lock left by a killed process would hang DeepSpeed's start
    accelerator = _accelerator(ds_config, zero3_init=_zero3_init(params), precision=run.precision,
                               plain=kind == "torch_amp")
    if accelerator.num_processes != run.world_size:
        raise config.ConfigError(
            f"run.nodes x run.processes_per_node = {run.world_size} but {accelerator.num_processes} processes were launched"
        )
    r = _Run(accelerator, params, out, t_start=time.perf_counter(), stopper=stopper, kind=kind, standalone=standalone,
             t_entry=t_entry)
    r.timings["start_to_train"] = _seconds_since_process_start() - (time.perf_counter() - t_entry)  # interpreter, imports
    if unsupported is None:
        _build(r, ds_config)
        if plan is not None:
            _restore(r, plan)
    _write_run_records(r, ds_config, resume and not overwrite, overwrite, restored=plan is not None)
    r.timings["setup"] = time.perf_counter() - t_entry  # accelerator, data, model, engine, records
    if unsupported:
        return r.finish("unsupported", reason=unsupported, steps=0)
    try:
        return _step_loop(r, stop_at_step)
    except Exception as e:
        if r.main:  # whatever broke, the folder says so (never a run that looks unfinished-but-fine)
            records.write_json_atomic(out / "summary.json", {
                "status": "failed", "error": f"{type(e).__name__}: {e}",
                "wall_seconds": time.perf_counter() - r.t_start})
        raise


def _seconds_since_process_start() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


def _zero3_init(params: TrainParams) -> bool:
    return params.run.zero_stage == 3 and params.run.zero3_init


_MIXED = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}  # run.precision -> Accelerate's name


def _accelerator(ds_config: dict[str, Any], zero3_init: bool, precision: str = "fp32", plain: bool = False):
    """Accelerate with the run's resolved DeepSpeed config (gloo process group on CPU).

    `plain`: no DeepSpeed (torch AMP's fp16 on CPU): Accelerate's CPU data parallelism (DDP over
    gloo) and no mixed precision of its own (mt5study.amp autocasts)."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    cuda = torch.cuda.is_available()
    # Without CUDA, Accelerate's DeepSpeed path finds no backend and silently runs every rank
    # as a world of one; naming gloo makes the ranks one job (checked by the caller).
    handlers = [] if cuda else [InitProcessGroupKwargs(backend="gloo")]
    if plain:
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "false"  # set by `accelerate launch --use_deepspeed`
        return Accelerator(cpu=not cuda, mixed_precision="no", kwargs_handlers=handlers)
    # zero3_init_flag registers the config with transformers, so that from_pretrained partitions
    # as it loads (mt5study.partition).
    plugin = DeepSpeedPlugin(hf_ds_config=ds_config, zero3_init_flag=zero3_init)
    return Accelerator(deepspeed_plugin=plugin, mixed_precision=_MIXED[precision], kwargs_handlers=handlers)


def _build(r: _Run, ds_config: dict[str, Any]) -> None:
    """Data, model (partitioned at construction under ZeRO-3), optimizer, schedule, engine."""
    from accelerate.utils import set_seed

    params, run = r.params, r.params.run
    set_seed(run.seed)
    r.splits = batches.load_splits(params.data, run.seed)
    r.vocab = params.model.vocab_size or r.splits["vocab_size"]
    if r.vocab < r.splits["vocab_size"]:
        raise config.ConfigError(f"model.vocab_size={r.vocab} is smaller than the data's vocabulary {r.splits['vocab_size']}")
    net = partition.build(params, r.vocab, ds_config, partitioned=_zero3_init(params) and not r.amp)
    if params.model.activation_checkpointing:
        net.gradient_checkpointing_enable()
    optimizer = build_optimizer(net, params.optim)
    r.scheduler = build_scheduler(optimizer, params.optim, run.steps)
    # The schedule is stepped here, once per applied optimizer step: Accelerate's scheduler
    # wrapper would step a LambdaLR num_processes times per step, and DeepSpeed only steps its
    # own scheduler types. Registered so that save_state/load_state carry it.
    r.model, _ = r.accelerator.prepare(net, optimizer)
    r.accelerator.register_for_checkpointing(r.scheduler)
    if r.amp:  # torch AMP: this file's step loop clips and steps; the scaler is checkpointed too
        r.engine = AmpEngine(r.model, net, optimizer, params.optim.grad_clip, run.fp16_initial_scale_power)
        r.accelerator.register_for_checkpointing(r.engine.scaler)
    else:
        r.engine = r.model
    partition.release_freed_memory()  # prepare's flattening copies, freed: back to the OS


def _restore(r: _Run, plan: checkpoints.Resume) -> None:
    """Load the checkpoint (its universal conversion at another world size) and its position."""
    run = r.params.run
    if plan.universal:
        error = None
        if r.main:  # one rank converts; the others wait and learn whether it worked
            try:
                checkpoints.ensure_universal(plan.checkpoint, run.zero_stage)
            except checkpoints.CheckpointError as e:
                error = str(e)
        error = _broadcast(error)
        if error:
            raise checkpoints.CheckpointError(error)
    checkpoints.load(r.accelerator, r.engine, plan)
    state = plan.state
    r.start_step, r.tokens_seen, r.prior_wall = state["step"], state["tokens"], state["wall_seconds"]
    # Checkpoints carry the data position in examples, so another split of the global batch
    # continues at the same example.
    r.start_example = state.get("data_position", state["step"] * run.effective_global_batch)
    # At run.steps (killed after its last checkpoint, before its final weights and summary) the
    # step loop trains nothing and the run finishes from the restored state.
    if r.start_step > run.steps:
        raise config.ConfigError(f"run.steps={run.steps} but the checkpoint is already at step {r.start_step}")


def _write_run_records(r: _Run, ds_config: dict[str, Any], resume: bool, overwrite: bool, restored: bool) -> None:
    """Prepare the run folder and write config.json, deepspeed_config.json, env.json, inputs.json."""
    acc, out = r.accelerator, r.out
    if r.main:
        # Inputs named first: data, tokenizer or checkpoint that cannot be hashed is an
        # InputsError before the folder is touched (the launcher then stops the other ranks).
        inputs = records.run_inputs(r.params, out)
        prepare_folder(out, r.params, resume, overwrite)
        records.write_json_atomic(out / "config.json", config.to_dict(r.params))
        if not r.amp:  # what DeepSpeed ran with (a torch AMP run has no DeepSpeed engine)
            records.write_json_atomic(out / "deepspeed_config.json", ds_config)
        records.write_json_atomic(out / "env.json", records.environment(
            world_size=acc.num_processes, device=str(acc.device), distributed_type=str(acc.distributed_type),
            engine=r.kind, launcher="none" if r.standalone else "accelerate",
            **({"fp16_engine": r.kind} if r.params.run.precision == "fp16" else {})))
        records.write_json_atomic(out / "inputs.json", inputs)
        if restored:  # drop metric lines written after the checkpoint: they will be redone
            rows = [row for row in records.read_metrics(out / "metrics.jsonl") if row["step"] <= r.start_step]
            records.rewrite_metrics(out / "metrics.jsonl", rows)
        elif resume and (out / "metrics.jsonl").exists():  # killed before its first checkpoint: from step 0
            records.rewrite_metrics(out / "metrics.jsonl", [])
    acc.wait_for_everyone()


def _evaluate(r: _Run, evals: list[dict[str, torch.Tensor]]) -> float:
    """Mean held-out cross-entropy over every rank's fixed eval micro-batches."""
    engine, device = r.engine, r.accelerator.device
    engine.eval()
    total = torch.zeros((), device=device)
    with torch.no_grad():
        for b in evals:
            b = {k: v.to(device) for k, v in b.items()}
            total += _loss(r, b).cross_entropy.float()
    engine.train()
    return r.accelerator.reduce(total / len(evals), reduction="mean").item()


def _loss(r: _Run, b: dict[str, torch.Tensor]) -> loss_lib.LossOut:
    """The model's loss on a micro-batch: `.total` to minimise, `.cross_entropy` to report."""
    return loss_lib.compute_loss(r.engine, b["input_ids"], b["labels"], z_loss=r.params.model.z_loss)


def _checkpoint(r: _Run, step: int, data_position: int) -> None:
    """Save the engine, optimizer, schedule and RNG; trainer_state.json last; keep the newest two."""
    final = r.out / CHECKPOINTS / f"step_{step:07d}"
    if step == r.start_step:
        return  # the checkpoint this attempt restored (a run resumed at run.steps): already this state
    if r.main and final.exists():  # a leftover of an attempt killed while writing it: files of
        print(f"mt5study: removing {final}, left half-written by an earlier attempt", file=sys.stderr, flush=True)
        shutil.rmtree(final)  # another world size or tag would otherwise survive the new save
    r.accelerator.wait_for_everyone()
    r.accelerator.save_state(str(final))
    r.accelerator.wait_for_everyone()
    if r.main:  # the state file is written last: a folder without it is incomplete
        records.write_json_atomic(final / STATE_FILE, checkpoints.state_record(
            r.params, step, r.tokens_seen, data_position,
            time.perf_counter() - r.t_start + r.prior_wall, r.accelerator.num_processes))
        for old in sorted((r.out / CHECKPOINTS).glob("step_*"))[:-2]:
            shutil.rmtree(old, ignore_errors=True)
    r.accelerator.wait_for_everyone()


def _step_loop(r: _Run, stop_at_step: int | None) -> int:
    """Steps from the start (or restored) step to run.steps, logging, evaluating, checkpointing."""
    acc, params, run, dcfg = r.accelerator, r.params, r.params.run, r.params.data
    rank, world, device = acc.process_index, acc.num_processes, acc.device
    global_batch = run.effective_global_batch
    loader = torch.utils.data.DataLoader(
        batches.MicroBatches(r.splits["train"], run, rank, world, r.start_step, run.seed, r.start_example),
        batch_size=None, shuffle=False, num_workers=dcfg.num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
    )
    evals = batches.eval_batches(r.splits["validation"], run.micro_batch, run.eval_batches, rank, world)
    tokens_per_step = global_batch * (dcfg.input_length + dcfg.target_length)
    flops_per_step = global_batch * model_lib.flops_per_example(
        params.model.preset, dcfg.input_length, dcfg.target_length, r.vocab)
    peak_flops = run.peak_tflops_per_device * 1e12 * world if run.peak_tflops_per_device else None
    eval_steps, stopper, flag_group = set(run.eval_steps), r.stopper or _Stop(), _cpu_group()
    engine, scheduler = r.engine, r.scheduler

    engine.train()
    t_loop = time.perf_counter()
    metrics = open(r.out / "metrics.jsonl", "a", encoding="utf-8") if r.main else None
    loss_sum = torch.zeros((), device=device)  # summed on device; read at log steps only
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    last_eval: float | None = None
    t_log, steps_in_log = time.perf_counter(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=run.steps, initial=r.start_step, disable=not r.main, desc="train", unit="step")
    it = iter(loader)
    step = r.start_step
    skips_in_a_row = 0  # optimizer steps skipped for fp16 overflow since the last applied one
    try:
        while step < run.steps:
            step_loss = _train_step(r, it, device)
            step_lr = scheduler.get_last_lr()[0]  # the rate this step's update used
            if engine.was_step_applied():  # False when fp16 overflow skipped the update
                scheduler.step()
                skips_in_a_row = 0
            else:
                skips_in_a_row += 1
            step += 1
            r.tokens_seen += tokens_per_step
            if skips_in_a_row >= run.fp16_max_skipped_steps:  # the same on every rank (reduced gradients)
                return _finish_diverged(r, step, step, f"the fp16 loss scaler skipped {skips_in_a_row} steps in a row "
                                        f"(gradients overflow at every scale down to {_loss_scale(engine):g})")
            bad = ~torch.isfinite(step_loss)
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
            loss_sum += torch.where(bad, torch.zeros_like(step_loss), step_loss)
            steps_in_log += 1
            bar.update(1)
            if step == r.start_step + 1:
                # The first step allocates the optimizer's moments and frees its one-off
                # temporaries (DeepSpeed's first gradient partitions, the trace): hand those back.
                partition.release_freed_memory()

            eval_now = (bool(run.eval_every and step % run.eval_every == 0) or step in eval_steps
                        or step == run.steps)  # the final evaluation lands in metrics.jsonl too
            if step % run.log_every == 0 or step == run.steps or eval_now:
                bad_step = int(acc.reduce(first_bad, reduction="max").item())
                if bad_step >= 0:
                    return _finish_diverged(r, bad_step, step, "non-finite training loss (NaN or inf)")
                elapsed = time.perf_counter() - t_log
                train_loss = acc.reduce(loss_sum, reduction="mean").item() / steps_in_log
                if eval_now:
                    last_eval = _evaluate(r, evals)
                row = _metrics_row(engine, step, train_loss, step_lr, elapsed, steps_in_log, tokens_per_step,
                                   flops_per_step, peak_flops, r.tokens_seen, acc, run.precision)
                if eval_now:
                    row["eval_loss"] = last_eval
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                bar.set_postfix(loss=f"{train_loss:.4f}")
                loss_sum.zero_()
                t_log, steps_in_log = time.perf_counter(), 0

            position = r.start_example + (step - r.start_step) * global_batch  # examples consumed
            stop = stopper.requested or (stop_at_step is not None and step >= stop_at_step)
            stop = _any_rank(stop, flag_group)
            if step < run.steps and (stop or (run.checkpoint_every and step % run.checkpoint_every == 0)):
                _checkpoint(r, step, position)
            if stop and step < run.steps:
                return r.finish("preempted", steps=step, tokens=r.tokens_seen,
                                checkpoint=str(latest_checkpoint(r.out)))
        r.timings["steps"] = time.perf_counter() - t_loop
        _checkpoint(r, step, r.start_example + (step - r.start_step) * global_batch)
        return _finish_completed(r, step, last_eval)  # evaluated at the last step, above
    finally:
        bar.close()
        if metrics:
            metrics.close()


def _train_step(r: _Run, it, device: torch.device) -> torch.Tensor:
    """One optimizer step over run.grad_accum micro-batches: their mean cross-entropy (a tensor)."""
    acc, engine, accum = r.accelerator, r.engine, r.params.run.grad_accum
    step_loss = torch.zeros((), device=device)
    for i in range(accum):
        b = {k: v.to(device, non_blocking=True) for k, v in next(it).items()}
        if r.amp:
            with engine.accumulating(last=i == accum - 1):
                out = _loss(r, b)
                engine.backward(out.total / accum)  # averaged as DeepSpeed averages over accumulation
        else:  # DeepSpeed averages, clips and steps inside backward at the accumulation boundary
            with acc.accumulate(engine):
                out = _loss(r, b)
                acc.backward(out.total)
        step_loss += out.cross_entropy.detach().float()
    if r.amp:
        engine.step()
    return step_loss / accum


def _finish_diverged(r: _Run, at_step: int, step: int, reason: str) -> int:
    """Record `diverged` (no weights saved, nothing marked completed) and stop."""
    return r.finish("diverged", diverged_at_step=at_step, reason=reason, steps=step, tokens=r.tokens_seen,
                    final_train_loss=float("nan"), final_eval_loss=None,
                    skipped_steps=int(getattr(r.engine, "skipped_steps", 0) or 0))


def _loss_scale(engine: Any) -> float:
    """The current fp16 loss scale (torch AMP's scaler, or DeepSpeed's fp16 optimizer)."""
    if isinstance(engine, AmpEngine):
        return engine.loss_scale
    opt = getattr(engine, "optimizer", None)
    return float(getattr(opt, "cur_scale", getattr(opt, "loss_scale", float("nan"))))


def _finish_completed(r: _Run, step: int, final_eval: float | None) -> int:
    """Save the gathered weights, then summary.json from the metrics."""
    acc = r.accelerator
    # The final checkpoint holds the optimizer's moments: drop them before the full weights are
    # gathered (mt5-base on 2 CPU ranks: 2.17 GiB per rank freed, the size of the gathered model).
    t_final = time.perf_counter()
    _drop_optimizer_state(r.engine)
    state_dict = acc.get_state_dict(r.model)  # ZeRO-3: gathers the full weights
    if r.main:
        # Shards of at most 500 MB: safetensors serialises a shard's tensors to bytes in memory.
        acc.unwrap_model(r.model).save_pretrained(r.out / "model", state_dict=state_dict, safe_serialization=True,
                                                   max_shard_size="500MB")
    acc.wait_for_everyone()
    rows = records.read_metrics(r.out / "metrics.jsonl") if r.main else []
    tps = [row["tokens_per_second"] for row in rows if row.get("tokens_per_second")]
    r.timings["save_weights"] = time.perf_counter() - t_final
    return r.finish(
        "completed", steps=step, tokens=r.tokens_seen,
        final_train_loss=rows[-1]["loss"] if rows else None,
        final_eval_loss=final_eval if final_eval is not None or not rows else rows[-1].get("eval_loss"),  # resumed at run.steps
        tokens_per_second=(sum(tps) / len(tps)) if tps else None,
        peak_memory_bytes=max((row["peak_memory_bytes"] for row in rows), default=None),
        mfu=rows[-1].get("mfu") if rows else None,
        skipped_steps=int(getattr(r.engine, "skipped_steps", 0) or 0),
    )


def _drop_optimizer_state(engine: Any) -> None:
    """Free the torch optimizer's per-parameter state (moments) under the engine's wrappers."""
    opt, seen = getattr(engine, "optimizer", None), 0
    while opt is not None and not isinstance(opt, torch.optim.Optimizer) and seen < 4:
        opt, seen = getattr(opt, "optimizer", None), seen + 1
    if isinstance(opt, torch.optim.Optimizer):
        opt.state.clear()
    partition.release_freed_memory()


def _metrics_row(engine, step, loss, lr, elapsed, n_steps, tokens_per_step, flops_per_step, peak_flops,
                 tokens_seen, accelerator, precision) -> dict[str, Any]:
    step_seconds = elapsed / n_steps
    peaks = accelerator.gather(torch.tensor([_peak_memory_bytes(accelerator.device)], device=accelerator.device))
    grad_norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
    if isinstance(grad_norm, torch.Tensor):
        grad_norm = grad_norm.item()
    row: dict[str, Any] = {
        "step": step, "loss": loss, "lr": lr,
        "grad_norm": None if grad_norm is None or not math.isfinite(grad_norm) else float(grad_norm),
        "tokens": tokens_seen,
        "tokens_per_second": tokens_per_step / step_seconds,
        "step_seconds": step_seconds,
        "peak_memory_bytes": int(peaks.max().item()),  # the largest rank's (GPU allocator / host RSS)
        "peak_memory_bytes_per_rank": [int(x) for x in peaks.tolist()],
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step / step_seconds / peak_flops if peak_flops else None,
    }
    if precision == "fp16":  # the loss scaler: its scale now, and the steps it skipped so far
        row["loss_scale"] = _loss_scale(engine)
        row["skipped_steps"] = int(getattr(engine, "skipped_steps", 0) or 0)
    return row


def _engine_kind(run: config.RunConfig) -> tuple[str, str | None]:
    """("deepspeed" or "torch_amp", why the run cannot go ahead or None).

    fp16 follows run.fp16_engine: `auto` takes torch AMP on a CPU (whatever DeepSpeed's CPU
    accelerator says: it accepts fp16 on some CPUs only) and DeepSpeed elsewhere. torch AMP has no
    ZeRO partitioning: zero_stage 0 only."""
    if run.precision == "fp32":
        return "deepspeed", None
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    name = acc.device_name()
    if run.precision == "bf16":
        return "deepspeed", None if acc.is_bf16_supported() else f"DeepSpeed's {name} accelerator reports bf16 unsupported"
    engine = run.fp16_engine if run.fp16_engine != "auto" else ("torch_amp" if name == "cpu" else "deepspeed")
    if engine == "deepspeed":
        return "deepspeed", None if acc.is_fp16_supported() else (
            f"DeepSpeed's {name} accelerator reports fp16 unsupported (run.fp16_engine={run.fp16_engine})")
    if name != "cpu":
        return "deepspeed", f"torch AMP fp16 is the CPU path (run.fp16_engine={run.fp16_engine} on {name})"
    if run.zero_stage == 0:
        return "torch_amp", None
    return "deepspeed", (f"fp16 on cpu runs through torch AMP at run.zero_stage 0 only (got {run.zero_stage}; "
                         f"run.fp16_engine={run.fp16_engine})")


def _cpu_group():
    """A gloo process group for host-side flags (no GPU sync per step), or None if single-process."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return dist.new_group(backend="gloo")


def _any_rank(flag: bool, group) -> bool:
    if group is None:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return bool(t.item())


def _broadcast(value: Any) -> Any:
    """Rank 0's `value` on every rank (a picklable object; host-side)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]
