"""Fault injection into real `mt5study` processes, loaded through PYTHONPATH by tests/faults.

Does nothing unless the environment asks (the launcher and every rank inherit it):

- MT5STUDY_FAULT_SAMPLES=DIR: every micro-batch a rank reads is appended to
  DIR/samples-<rank>-<pid>.jsonl as sample ids (indices into the train split), with the step it
  belongs to: the recorder behind "no sample skipped or seen twice".
- MT5STUDY_FAULT=POINT and MT5STUDY_FAULT_MARK=FILE: rank 0 stops dead at POINT, writes FILE and
  sleeps, so that the test kills the whole process tree with SIGKILL at exactly that point:
    save:N    while checkpoint step N is written: half of rank 0's optimizer shard is on disk
    gather    while the final weights are gathered from the ZeRO-3 shards
    step:N    after step N's update, before its metrics line is written
"""

from __future__ import annotations

import importlib.abc
import json
import os
import sys
import time

_FAULT = os.environ.get("MT5STUDY_FAULT", "")
_SAMPLES = os.environ.get("MT5STUDY_FAULT_SAMPLES", "")
_RANK = os.environ.get("RANK", "")


def _stop_here(what: str) -> None:
    """Mark the fault point reached, then wait for the test's SIGKILL."""
    mark = os.environ["MT5STUDY_FAULT_MARK"]
    with open(mark + ".tmp", "w") as f:
        f.write(f"{what} pid={os.getpid()}\n")
    os.replace(mark + ".tmp", mark)
    while True:
        time.sleep(60)


def _patch_batches(module) -> None:
    cls = module.MicroBatches
    original = cls.__getitem__
    path = os.path.join(_SAMPLES, f"samples-{_RANK or 0}-{os.getpid()}.jsonl")

    def __getitem__(self, k):
        pos = self.positions(k)
        ids = [int(self._perm(p // self.n)[p % self.n]) for p in pos]
        step, micro = divmod(k, self.ga)
        with open(path, "a") as f:
            f.write(json.dumps({"time": time.time(), "pid": os.getpid(), "launcher": os.getppid(), "rank": self.rank, "start": self.start,
                                "step": self.start + step, "micro": micro, "ids": ids}) + "\n")
        return original(self, k)

    cls.__getitem__ = __getitem__


def _patch_torch(module) -> None:
    step = int(_FAULT.split(":")[1])
    original = module.save

    def save(obj, f, *args, **kwargs):
        name = str(f)
        if f"step_{step:07d}" in name and "optim_states" in name and _RANK == "0":
            import io

            buf = io.BytesIO()
            original(obj, buf, *args, **kwargs)
            data = buf.getvalue()
            with open(name, "wb") as out:
                out.write(data[: len(data) // 2])
                out.flush()
                os.fsync(out.fileno())
            _stop_here(f"save step {step}: {len(data) // 2} of {len(data)} bytes of {name}")
        return original(obj, f, *args, **kwargs)

    module.save = save


def _patch_accelerate(module) -> None:
    original = module.Accelerator.get_state_dict

    def get_state_dict(self, *args, **kwargs):
        if _RANK == "0":
            _stop_here("gathering the final weights")
        return original(self, *args, **kwargs)

    module.Accelerator.get_state_dict = get_state_dict


def _patch_train(module) -> None:
    step = int(_FAULT.split(":")[1])
    original = module._metrics_row

    def _metrics_row(engine, at_step, *args, **kwargs):
        if at_step == step and _RANK == "0":
            _stop_here(f"after step {step}")
        return original(engine, at_step, *args, **kwargs)

    module._metrics_row = _metrics_row


class _AfterImport(importlib.abc.MetaPathFinder):
    """Runs a patch on a module right after it is first imported."""

    def __init__(self, patches):
        self.patches = patches

    def find_spec(self, name, path, target=None):
        if name not in self.patches:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                break
        else:
            return None
        patch, exec_module = self.patches.pop(name), spec.loader.exec_module

        def run_then_patch(module):
            exec_module(module)
            patch(module)

        spec.loader.exec_module = run_then_patch
        return spec


_patches = {}
if _SAMPLES:  # a launched rank, or one process without a launcher (rank 0)
    _patches["mt5study.batches"] = _patch_batches
if _RANK and _FAULT.startswith("save:"):
    _patches["torch"] = _patch_torch
elif _RANK and _FAULT == "gather":
    _patches["accelerate.accelerator"] = _patch_accelerate
elif _RANK and _FAULT.startswith("step:"):
    _patches["mt5study.train"] = _patch_train
if _patches:
    sys.meta_path.insert(0, _AfterImport(_patches))
