"""A run's checkpoints: find the newest, check it against the params, convert it for another world size.

A checkpoint folder `checkpoints/step_N/` is what `accelerator.save_state` writes (DeepSpeed's files
under `pytorch_model/`, the scheduler and the RNG states), completed by `trainer_state.json`,
written last. The state file carries the step, the data position in examples, the world size, the
ZeRO stage, the global batch and the model section of the params, so that a resume is checked
against the params before anything is built or written.

ZeRO-1/2/3 keep optimizer states (and under ZeRO-3 parameters) in per-rank shards, so a checkpoint
only loads at the world size that wrote it. At another world size it goes through DeepSpeed's
universal checkpoint (`deepspeed.checkpoint.ds_to_universal`: one file per parameter and state),
built once in a temporary folder and renamed to `step_N/universal/`, so that a folder of that name
is complete and is reused by later resumes. ZeRO-0 keeps whole states on every rank and needs no
conversion.

A resume never loads a torn checkpoint: a folder without its state file is not a checkpoint, and
the newest one that has it is checked first (`check_complete`: the state file parses and names
the folder's step, every rank's shard is there, every torch/safetensors file is whole). One that
fails, or one past `run.steps`, is set aside under `checkpoints/set_aside-*`, the console says
why, and the one before it is used. One at `run.steps` (the run was stopped after its last
checkpoint, while its final weights were gathered) is used: the run trains nothing more and
finishes from it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import struct
import sys
import time
import zipfile
from argparse import Namespace
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mt5study import records
from mt5study.config import ConfigError, TrainParams

CHECKPOINTS = "checkpoints"  # folder of a run's checkpoints
STATE_FILE = "trainer_state.json"  # written last in a checkpoint folder: marks it complete
UNIVERSAL = "universal"  # cached universal conversion, inside the checkpoint folder
SET_ASIDE = "set_aside"  # prefix of a checkpoint folder a resume refused (kept for a post-mortem)
DS_TAG = "pytorch_model"  # Accelerate's tag for the DeepSpeed engine's files
ARCHITECTURE_KEYS = ("preset", "vocab_size")  # model keys a resume must not change


class CheckpointError(ConfigError):
    """A checkpoint that cannot be used with these params: names the folder and the reason."""


@dataclass(frozen=True)
class Resume:
    """Where a resume loads from, and what the checkpoint recorded."""

    checkpoint: Path  # the step_N folder
    state: dict[str, Any]  # its trainer_state.json
    universal: bool  # written at another world size: load the universal conversion
    skipped: tuple[str, ...] = ()  # newer checkpoints set aside, each "folder: reason"

    @property
    def load_dir(self) -> Path:
        """The folder to hand to `accelerator.load_state`."""
        return self.checkpoint / UNIVERSAL if self.universal else self.checkpoint


def latest(out: Path) -> Path | None:
    """The newest complete checkpoint folder of a run, or None."""
    done = sorted(p.parent for p in (Path(out) / CHECKPOINTS).glob(f"step_*/{STATE_FILE}"))
    return done[-1] if done else None


def state_record(params: TrainParams, step: int, tokens: int, data_position: int, wall_seconds: float,
                 world_size: int) -> dict[str, Any]:
    """The trainer_state.json of a checkpoint: position, topology and the model it holds."""
    run = params.run
    return {"step": step, "tokens": tokens, "data_position": data_position,  # examples consumed
            "global_batch": run.micro_batch * run.grad_accum * world_size,
            "wall_seconds": wall_seconds, "seed": run.seed, "world_size": world_size,
            "zero_stage": run.zero_stage, "model": params.model.model_dump(mode="json")}


def plan_resume(out: Path, params: TrainParams) -> Resume | None:
    """The newest checkpoint of `out` checked against `params`, or None if there is none.

    Raises CheckpointError, before anything is built or written, for a checkpoint of another
    architecture or ZeRO stage, or a world size that does not divide its global batch.
    """
    ckpt, state, skipped = _newest_usable(out, params.run.steps)
    if ckpt is None:
        return None
    run, world = params.run, params.run.world_size
    saved_model = state.get("model", {})
    for key in ARCHITECTURE_KEYS:
        if key in saved_model and saved_model[key] != getattr(params.model, key):
            raise CheckpointError(
                f"checkpoint {ckpt} holds model.{key}={saved_model[key]!r} but the params say "
                f"model.{key}={getattr(params.model, key)!r}: a checkpoint of another architecture")
    if state.get("zero_stage", run.zero_stage) != run.zero_stage:
        raise CheckpointError(f"checkpoint {ckpt} was written under ZeRO stage {state['zero_stage']}; "
                              f"run.zero_stage={run.zero_stage} cannot load it")
    global_batch = state.get("global_batch")
    if global_batch is not None:
        if global_batch % world:
            raise CheckpointError(
                f"checkpoint {ckpt} trained with global batch {global_batch}; world size {world} "
                f"(run.nodes x run.processes_per_node) does not divide it")
        if global_batch != run.effective_global_batch:
            raise CheckpointError(
                f"checkpoint {ckpt} trained with global batch {global_batch} but run.micro_batch "
                f"{run.micro_batch} x run.grad_accum {run.grad_accum} x world size {world} = "
                f"{run.effective_global_batch}; set them so that the product is {global_batch}")
    universal = state.get("world_size", world) != world and run.zero_stage > 0
    if universal and params.optim.name != "adamw":
        raise CheckpointError(f"checkpoint {ckpt}: resuming at another world size needs optim.name=adamw "
                              f"(DeepSpeed's universal checkpoint carries Adam's states), got {params.optim.name}")
    return Resume(ckpt, state, universal, skipped)


def complete(out: Path) -> list[Path]:
    """A run's checkpoint folders that carry their state file, newest first."""
    return sorted((p.parent for p in (Path(out) / CHECKPOINTS).glob(f"step_*/{STATE_FILE}")), reverse=True)


def _newest_usable(out: Path, steps: int) -> tuple[Path | None, dict[str, Any], tuple[str, ...]]:
    """The newest checkpoint that passes `check_complete` and is before `steps`, its state, and
    the newer ones set aside ("folder: reason"). Raises CheckpointError when none is usable."""
    found, skipped = complete(out), []
    for ckpt in found:
        reason = check_complete(ckpt)
        if reason is None:
            state = records.read_json(ckpt / STATE_FILE)
            if state["step"] <= steps or ckpt == found[-1]:
                moved = False
                for folder, why in skipped:  # moved only once a usable checkpoint is found
                    name, by_me = _set_aside(folder)
                    moved |= by_me
                    _say(f"checkpoint {folder} is not used: {why}; set aside as {name}", by_me)
                if skipped:
                    _say(f"resuming from {ckpt} instead", moved)
                return ckpt, state, tuple(f"{folder}: {why}" for folder, why in skipped)
            reason = f"at step {state['step']}, past run.steps={steps}"
        if not ckpt.exists():
            continue  # another rank of this launch set it aside meanwhile (and said why)
        skipped.append((ckpt, reason))
    if skipped:
        raise CheckpointError(f"no usable checkpoint in {Path(out) / CHECKPOINTS}: "
                              + "; ".join(f"{folder.name}: {why}" for folder, why in skipped)
                              + " (start again with --overwrite)")
    return None, {}, ()


def _say(message: str, mine: bool = False) -> None:
    """A console line from the rank that acted (`mine`) or the first rank: every rank plans the
    same resume, and whichever gets there first moves the refused checkpoints."""
    if mine or os.environ.get("RANK", "0") == "0":
        print(f"mt5study: {message}", file=sys.stderr, flush=True)


def _set_aside(ckpt: Path) -> tuple[str, bool]:
    """Rename a refused checkpoint out of the `step_*` namespace, so that the step is written
    anew into a fresh folder: (new name, whether this process moved it; another rank may have)."""
    dest = ckpt.parent / f"{SET_ASIDE}-{ckpt.name}-{time.time_ns()}"
    try:
        os.rename(ckpt, dest)
    except FileNotFoundError:
        return dest.name, False
    return dest.name, True


def check_complete(ckpt: Path) -> str | None:
    """Why checkpoint folder `ckpt` cannot be loaded, or None when it is whole.

    Reads the state file and the ends of the files only (zip central directories, safetensors
    headers), not the tensors: seconds for a 13B checkpoint. A shard cut short loses its zip
    central directory, which torch writes last.
    """
    ckpt = Path(ckpt)
    try:
        state = json.loads((ckpt / STATE_FILE).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as e:
        return f"unreadable {STATE_FILE} ({type(e).__name__}: {e})"
    if not isinstance(state, dict) or not isinstance(state.get("step"), int) or state.get("data_position") is None:
        return f"{STATE_FILE} lacks step or data_position"
    if ckpt.name.startswith("step_") and ckpt.name[5:].isdigit() and int(ckpt.name[5:]) != state["step"]:
        return f"{STATE_FILE} says step {state['step']} in folder {ckpt.name}"
    world = state.get("world_size")
    if isinstance(world, int) and world > 0:
        for r in range(world):
            if not (ckpt / f"random_states_{r}.pkl").is_file():
                return f"rank {r}'s random_states_{r}.pkl is missing"
        shards = list((ckpt / DS_TAG).glob("*optim_states.pt")) if (ckpt / DS_TAG).is_dir() else []
        if (ckpt / DS_TAG).is_dir() and state.get("zero_stage", 0) >= 1 and len(shards) != world:
            return f"{len(shards)} optimizer shards in {DS_TAG}/ for world size {world}"
    for f in sorted(ckpt.rglob("*")):
        if UNIVERSAL in f.relative_to(ckpt).parts[:1] or not f.is_file():
            continue  # the universal conversion is checked when it is made (ensure_universal)
        problem = _whole_file_problem(f)
        if problem:
            return f"{f.relative_to(ckpt)} {problem}"
    return None


def _whole_file_problem(f: Path) -> str | None:
    """Why a saved tensor file is cut short or corrupt, or None (other files are not checked)."""
    if f.suffix not in (".pt", ".pth", ".bin", ".pkl", ".safetensors"):
        return None
    size = f.stat().st_size
    if size == 0:
        return "is empty"
    with open(f, "rb") as fh:
        head = fh.read(8)
    if f.suffix == ".safetensors":
        if size < 8:
            return "is cut short (no header)"
        n = struct.unpack("<Q", head)[0]
        if 8 + n > size:
            return f"is cut short ({size} bytes, header says more)"
        with open(f, "rb") as fh:
            fh.seek(8)
            try:
                header = json.loads(fh.read(n))
            except ValueError:
                return "has a corrupt header"
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return None if 8 + n + end <= size else f"is cut short ({size} of {8 + n + end} bytes)"
    if not head.startswith(b"PK"):
        return None  # a legacy pickle: not checked
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError) as e:
        return f"is cut short or corrupt ({e})"
    end = max((i.header_offset + i.compress_size for i in infos), default=0)
    return None if end <= size else f"is cut short ({size} of at least {end} bytes)"


def check_pretrained(params: TrainParams) -> None:
    """Refuse a local `model.checkpoint` whose architecture is not the preset's (reads config.json only)."""
    source = params.model.checkpoint
    if source is None or not (Path(source) / "config.json").is_file():
        return  # a hub name, or a folder that model.load_checkpoint reports on
    from mt5study import model as model_lib

    try:
        got = records.read_json(Path(source) / "config.json")
    except (OSError, ValueError) as e:
        raise CheckpointError(f"model.checkpoint={source}: unreadable config.json: {e}") from e
    want = model_lib.config_for(params.model.preset, params.model.vocab_size)
    keys = ("d_model", "d_ff", "num_layers", "num_heads", "d_kv") + (("vocab_size",) if params.model.vocab_size else ())
    diff = {k: (got.get(k), getattr(want, k)) for k in keys if got.get(k) != getattr(want, k)}
    if diff:
        shown = ", ".join(f"{k}: checkpoint {a} vs preset {b}" for k, (a, b) in diff.items())
        raise CheckpointError(f"model.checkpoint={source} is another architecture than "
                              f"model.preset={params.model.preset} ({shown})")


def ensure_universal(ckpt: Path, zero_stage: int) -> Path:
    """The universal conversion of checkpoint `ckpt`, made now unless already cached; returns its folder."""
    dest = ckpt / UNIVERSAL
    if dest.is_dir():
        return dest  # renamed into place only when complete
    tmp = ckpt / f".{UNIVERSAL}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        from deepspeed.checkpoint import ds_to_universal

        args = Namespace(input_folder=str(ckpt / DS_TAG), output_folder=str(tmp / DS_TAG),
                         num_extract_workers=1, num_merge_workers=1,  # serial: no forks of a rank
                         keep_temp_folder=False, strict=True, inject_missing_state=zero_stage < 3)
        with contextlib.redirect_stdout(sys.stderr):  # its progress lines belong in the log
            ds_to_universal.main(args)
        for f in ckpt.iterdir():  # scheduler and RNG states, which load_state reads beside the model
            if f.is_file() and f.name != STATE_FILE:
                shutil.copy2(f, tmp / f.name)
        os.rename(tmp, dest)
    except Exception as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"checkpoint {ckpt}: conversion to a universal checkpoint failed: "
                              f"{type(e).__name__}: {e}") from e
    return dest


def load(accelerator: Any, engine: Any, resume: Resume) -> None:
    """Load a checkpoint into the prepared engine, optimizer and registered objects."""
    try:
        accelerator.load_state(str(resume.load_dir))
        if resume.universal:
            _unshare_step_counts(engine)
    except Exception as e:
        what = "universal checkpoint" if resume.universal else "checkpoint"
        hint = f" (delete {resume.load_dir} to convert it again)" if resume.universal else ""
        raise CheckpointError(f"{what} {resume.load_dir} cannot be read: {type(e).__name__}: {e}{hint}") from e


def _unshare_step_counts(engine: Any) -> None:
    """Give every optimizer state its own step tensor after a universal ZeRO-3 load.

    DeepSpeed 0.19's universal loader (stage3.load_hp_checkpoint_state_from_checkpoint_dir_stage3)
    stores one `step` tensor object in the state of every parameter sub-group; torch's Adam
    increments it in place, once per sub-group per step, so the bias correction of all but the
    first sub-group runs ahead (measured here: the loss 1e-3 off the uninterrupted run 4 steps
    after a 2 -> 1 resume; with this, 1e-7).
    """
    inner = getattr(getattr(engine, "optimizer", None), "optimizer", None)  # the torch optimizer
    for state in getattr(inner, "state", {}).values():
        step = state.get("step")
        if isinstance(step, torch.Tensor):
            state["step"] = step.clone()
