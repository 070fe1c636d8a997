"""The training run: one process per device under `accelerate launch`, DeepSpeed ZeRO 0-3.

Reads as a recipe: prepare the run folder -> data -> model -> optimizer and schedule ->
`accelerator.prepare` -> step loop -> final evaluation, weights and summary.json (written last).
"""

from __future__ import annotations

import json
import math
import resource
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import torch

from mt5study import batches, config, model as model_lib, records
from mt5study.config import TrainParams
from mt5study.launch import EXIT_OK, deepspeed_config
from mt5study.optim import build_optimizer, build_scheduler

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"  # written last in a checkpoint folder: marks it complete


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


def latest_checkpoint(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    done = sorted(p.parent for p in (out / CHECKPOINTS).glob(f"step_*/{STATE_FILE}"))
    return done[-1] if done else None


def prepare_folder(out: Path, params: TrainParams, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a completed run; clear a stale one unless resuming."""
    summary = out / "summary.json"
    if summary.exists():
        status = records.read_json(summary).get("status")
        if status == "completed" and not overwrite:
            raise RunExists(f"{out} holds a completed run; pass --overwrite to replace it")
        summary.unlink()  # a new attempt: the old summary no longer describes the folder
    if overwrite or not resume:
        for name in ("metrics.jsonl", "model", CHECKPOINTS):
            p = out / name
            if p.is_dir():
                shutil.rmtree(p)
            elif p.exists():
                p.unlink()
    out.mkdir(parents=True, exist_ok=True)


def train(params: TrainParams, out_dir: str | Path, resume: bool = False, overwrite: bool = False,
          stop_at_step: int | None = None) -> int:
    """Run training in this process (one rank of the launch); return the process exit code."""
    from accelerate import Accelerator
    from accelerate.utils import DeepSpeedPlugin, InitProcessGroupKwargs

    out = Path(out_dir)
    run = params.run
    ds_config = deepspeed_config(params)
    plugin = DeepSpeedPlugin(hf_ds_config=ds_config, zero3_init_flag=False)
    # Without CUDA, Accelerate's DeepSpeed path finds no backend and silently runs every rank
    # as a world of one; naming gloo makes the ranks one job (checked just below).
    handlers = [] if torch.cuda.is_available() else [InitProcessGroupKwargs(backend="gloo")]
    accelerator = Accelerator(deepspeed_plugin=plugin, kwargs_handlers=handlers)
    main = accelerator.is_main_process
    if accelerator.num_processes != run.world_size:
        raise config.ConfigError(
            f"run.nodes x run.processes_per_node = {run.world_size} but {accelerator.num_processes} processes were launched"
        )
    if main:
        prepare_folder(out, params, resume, overwrite)
        records.write_json_atomic(out / "config.json", config.to_dict(params))
        records.write_json_atomic(out / "deepspeed_config.json", ds_config)
        records.write_json_atomic(out / "env.json", records.environment(
            world_size=accelerator.num_processes, device=str(accelerator.device),
            distributed_type=str(accelerator.distributed_type)))
    accelerator.wait_for_everyone()
    t_start = time.perf_counter()
    try:
        return _run(accelerator, params, out, resume, stop_at_step, t_start)
    except Exception as e:
        if main:  # whatever broke, the folder says so (never a run that looks unfinished-but-fine)
            records.write_json_atomic(out / "summary.json", {
                "status": "failed", "error": f"{type(e).__name__}: {e}",
                "wall_seconds": time.perf_counter() - t_start})
        raise


def _run(accelerator, params: TrainParams, out: Path, resume: bool, stop_at_step: int | None, t_start: float) -> int:
    """The run after its folder is prepared: data, model, engine, step loop, final records."""
    run, dcfg = params.run, params.data
    main = accelerator.is_main_process
    from accelerate.utils import set_seed

    def finish(status: str, **fields: Any) -> int:
        if main:
            summary = {"status": status, "world_size": accelerator.num_processes, **fields,
                       "wall_seconds": time.perf_counter() - t_start + prior_wall}
            records.write_json_atomic(out / "summary.json", summary)
        accelerator.wait_for_everyone()
        # Every rank exits 0 when a result was recorded (torchrun counts any other code as a
        # crash); `mt5study launch` maps a `preempted` summary to EXIT_PREEMPTED for Slurm.
        return EXIT_OK

    prior_wall = 0.0
    unsupported = _unsupported_reason(run.precision, accelerator.device)
    if unsupported:
        return finish("unsupported", reason=unsupported, steps=0)

    # Data, model, optimizer -------------------------------------------------------------------
    set_seed(run.seed)
    splits = batches.load_splits(dcfg, run.seed)
    vocab = params.model.vocab_size or splits["vocab_size"]
    if vocab < splits["vocab_size"]:
        raise config.ConfigError(f"model.vocab_size={vocab} is smaller than the data's vocabulary {splits['vocab_size']}")
    net = model_lib.build(params.model.preset, vocab_size=vocab, dropout_rate=params.model.dropout_rate,
                          checkpoint=params.model.checkpoint)
    if params.model.activation_checkpointing:
        net.gradient_checkpointing_enable()
    optimizer = build_optimizer(net, params.optim)
    scheduler = build_scheduler(optimizer, params.optim, run.steps)
    # The schedule is stepped here, once per applied optimizer step: Accelerate's scheduler
    # wrapper would step a LambdaLR num_processes times per step, and DeepSpeed only steps its
    # own scheduler types. Registered so that save_state/load_state carry it.
    engine, optimizer = accelerator.prepare(net, optimizer)
    accelerator.register_for_checkpointing(scheduler)

    start_step, tokens_seen = 0, 0
    if resume and (ckpt := latest_checkpoint(out)) is not None:
        accelerator.load_state(str(ckpt))
        state = records.read_json(ckpt / STATE_FILE)
        start_step, tokens_seen, prior_wall = state["step"], state["tokens"], state["wall_seconds"]
        if main:  # drop metric lines written after the checkpoint: they will be redone
            rows = [r for r in records.read_metrics(out / "metrics.jsonl") if r["step"] <= start_step]
            records.rewrite_metrics(out / "metrics.jsonl", rows)
    if start_step >= run.steps:
        raise config.ConfigError(f"run.steps={run.steps} but the checkpoint is already at step {start_step}")

    rank, world = accelerator.process_index, accelerator.num_processes
    loader = torch.utils.data.DataLoader(
        batches.MicroBatches(splits["train"], run, rank, world, start_step, run.seed),
        batch_size=None, shuffle=False, num_workers=dcfg.num_workers,
        pin_memory=accelerator.device.type == "cuda", persistent_workers=False,
    )
    evals = batches.eval_batches(splits["validation"], run.micro_batch, run.eval_batches, rank, world)
    tokens_per_step = run.effective_global_batch * (dcfg.input_length + dcfg.target_length)
    flops_per_step = run.effective_global_batch * model_lib.flops_per_example(
        params.model.preset, dcfg.input_length, dcfg.target_length, vocab)
    peak_flops = run.peak_tflops_per_device * 1e12 * world if run.peak_tflops_per_device else None
    device = accelerator.device
    eval_steps = set(run.eval_steps)
    stopper = _Stop()
    flag_group = _cpu_group()

    def evaluate() -> float:
        engine.eval()
        total = torch.zeros((), device=device)
        with torch.no_grad():
            for b in evals:
                b = {k: v.to(device) for k, v in b.items()}
                total += engine(input_ids=b["input_ids"], attention_mask=batches.attention_mask(b["input_ids"]),
                                labels=b["labels"]).loss.float()
        engine.train()
        return accelerator.reduce(total / len(evals), reduction="mean").item()

    def checkpoint(step: int) -> None:
        final = out / CHECKPOINTS / f"step_{step:07d}"
        accelerator.save_state(str(final))
        accelerator.wait_for_everyone()
        if main:  # the state file is written last: a folder without it is incomplete
            records.write_json_atomic(final / STATE_FILE, {
                "step": step, "tokens": tokens_seen, "data_position": step * run.effective_global_batch,
                "wall_seconds": time.perf_counter() - t_start + prior_wall, "seed": run.seed,
                "world_size": world, "zero_stage": run.zero_stage})
            for old in sorted((out / CHECKPOINTS).glob("step_*"))[:-2]:  # keep the newest two
                shutil.rmtree(old, ignore_errors=True)
        accelerator.wait_for_everyone()

    # Step loop --------------------------------------------------------------------------------
    engine.train()
    metrics = open(out / "metrics.jsonl", "a", encoding="utf-8") if main else None
    loss_sum = torch.zeros((), device=device)  # summed on device; read at log steps only
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    last_eval: float | None = None
    t_log, steps_in_log = time.perf_counter(), 0
    from tqdm.auto import tqdm

    bar = tqdm(total=run.steps, initial=start_step, disable=not main, desc="train", unit="step")
    it = iter(loader)
    step = start_step
    try:
        while step < run.steps:
            step_loss = torch.zeros((), device=device)
            for _ in range(run.grad_accum):
                b = next(it)
                b = {k: v.to(device, non_blocking=True) for k, v in b.items()}
                with accelerator.accumulate(engine):
                    loss = engine(input_ids=b["input_ids"], attention_mask=batches.attention_mask(b["input_ids"]),
                                  labels=b["labels"]).loss
                    accelerator.backward(loss)
                step_loss += loss.detach().float()
            step_lr = scheduler.get_last_lr()[0]  # the rate this step's update used
            if engine.was_step_applied():  # False when fp16 overflow skipped the update
                scheduler.step()
            step += 1
            tokens_seen += tokens_per_step
            step_loss /= run.grad_accum
            bad = ~torch.isfinite(step_loss)
            first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
            loss_sum += torch.where(bad, torch.zeros_like(step_loss), step_loss)
            steps_in_log += 1
            bar.update(1)

            eval_now = (bool(run.eval_every and step % run.eval_every == 0) or step in eval_steps
                        or step == run.steps)  # the final evaluation lands in metrics.jsonl too
            log_now = step % run.log_every == 0 or step == run.steps or eval_now
            if log_now:
                bad_step = int(accelerator.reduce(first_bad, reduction="max").item())
                if bad_step >= 0:
                    return finish("diverged", diverged_at_step=bad_step, steps=step, tokens=tokens_seen,
                                  final_train_loss=float("nan"), final_eval_loss=None)
                elapsed = time.perf_counter() - t_log
                train_loss = accelerator.reduce(loss_sum, reduction="mean").item() / steps_in_log
                if eval_now:
                    last_eval = evaluate()
                row = _metrics_row(engine, step, train_loss, step_lr, elapsed, steps_in_log,
                                   tokens_per_step, flops_per_step, peak_flops, tokens_seen, last_eval,
                                   accelerator, run.precision)
                if eval_now:
                    row["eval_loss"] = last_eval
                if metrics:
                    metrics.write(json.dumps(row) + "\n")
                    metrics.flush()
                bar.set_postfix(loss=f"{train_loss:.4f}")
                loss_sum.zero_()
                t_log, steps_in_log = time.perf_counter(), 0

            stop = stopper.requested or (stop_at_step is not None and step >= stop_at_step)
            stop = _any_rank(stop, flag_group)
            if step < run.steps and (stop or (run.checkpoint_every and step % run.checkpoint_every == 0)):
                checkpoint(step)
            if stop and step < run.steps:
                return finish("preempted", steps=step, tokens=tokens_seen, checkpoint=str(latest_checkpoint(out)))

        # End of training: evaluation, checkpoint, gathered weights, summary (last) -------------
        final_eval = last_eval  # evaluated at the last step, above
        checkpoint(step)
        state_dict = accelerator.get_state_dict(engine)  # ZeRO-3: gathers the full weights
        if main:
            accelerator.unwrap_model(engine).save_pretrained(out / "model", state_dict=state_dict,
                                                             safe_serialization=True)
        accelerator.wait_for_everyone()
        rows = records.read_metrics(out / "metrics.jsonl") if main else []
        tps = [r["tokens_per_second"] for r in rows if r.get("tokens_per_second")]
        return finish(
            "completed", steps=step, tokens=tokens_seen,
            final_train_loss=rows[-1]["loss"] if rows else None, final_eval_loss=final_eval,
            tokens_per_second=(sum(tps) / len(tps)) if tps else None,
            peak_memory_bytes=max((r["peak_memory_bytes"] for r in rows), default=None),
            mfu=rows[-1].get("mfu") if rows else None,
            skipped_steps=int(getattr(engine, "skipped_steps", 0) or 0),
        )
    finally:
        bar.close()
        if metrics:
            metrics.close()


def _metrics_row(engine, step, loss, lr, elapsed, n_steps, tokens_per_step, flops_per_step, peak_flops,
                 tokens_seen, eval_loss, accelerator, precision) -> dict[str, Any]:
    step_seconds = elapsed / n_steps
    peak = torch.tensor(_peak_memory_bytes(accelerator.device), device=accelerator.device)
    grad_norm = engine.get_global_grad_norm() if hasattr(engine, "get_global_grad_norm") else None
    if isinstance(grad_norm, torch.Tensor):
        grad_norm = grad_norm.item()
    row: dict[str, Any] = {
        "step": step, "loss": loss, "lr": lr,
        "grad_norm": None if grad_norm is None or not math.isfinite(grad_norm) else float(grad_norm),
        "tokens": tokens_seen,
        "tokens_per_second": tokens_per_step / step_seconds,
        "step_seconds": step_seconds,
        "peak_memory_bytes": int(accelerator.reduce(peak, reduction="max").item()),
        "flops_per_step": flops_per_step,
        "mfu": flops_per_step / step_seconds / peak_flops if peak_flops else None,
    }
    if precision == "fp16":
        opt = getattr(engine, "optimizer", None)
        row["loss_scale"] = float(getattr(opt, "cur_scale", getattr(opt, "loss_scale", float("nan"))))
        row["skipped_steps"] = int(getattr(engine, "skipped_steps", 0) or 0)
    return row


def _unsupported_reason(precision: str, device: torch.device) -> str | None:
    """Why DeepSpeed cannot run this precision on this device, or None."""
    if precision == "fp32":
        return None
    from deepspeed.accelerator import get_accelerator

    acc = get_accelerator()
    supported = acc.is_fp16_supported() if precision == "fp16" else acc.is_bf16_supported()
    if not supported:
        return f"DeepSpeed's {acc.device_name()} accelerator reports {precision} unsupported on {device}"
    return None


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
