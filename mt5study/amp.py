"""fp16 on CPU through torch AMP, where DeepSpeed's CPU accelerator refuses fp16.

The forward runs under `torch.autocast("cpu", dtype=torch.float16)` (matmuls in fp16, what
autocast keeps in fp32 stays there; mt5study's `Float32Linear` head turns autocast off and computes
the logits in fp32, and `loss.compute_loss` takes the cross-entropy in fp32). Weights, gradients
and Adam's states stay fp32. `torch.amp.GradScaler("cpu")` scales the loss so that small fp16
gradients do not flush to zero, unscales before clipping, and skips a step whose gradients
overflowed, halving its scale (doubling it after `growth_interval` clean steps), as DeepSpeed's
dynamic loss scaling does on a GPU. Runs record `fp16_engine: torch_amp` (env.json, summary.json).

`AmpEngine` gives the step loop what it uses of a DeepSpeed engine: call, train/eval,
`was_step_applied`, `get_global_grad_norm`, `skipped_steps`, the loss scale.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch

GROWTH_INTERVAL = 1000  # clean steps before the scale doubles (DeepSpeed's loss_scale_window)


class AmpEngine:
    """A prepared model (plain, or DDP over several ranks) and its optimizer, stepped with torch AMP."""

    def __init__(self, model: torch.nn.Module, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 grad_clip: float, initial_scale_power: int) -> None:
        self.model = model  # what runs forward (DDP when several ranks)
        self.module = module  # the bare transformers model (loss.compute_loss reads its config)
        self.optimizer = optimizer  # the torch optimizer (not Accelerate's wrapper)
        self.grad_clip = grad_clip  # max global grad norm; 0 = no clipping (the norm is still measured)
        self.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**initial_scale_power, growth_factor=2.0,
                                           backoff_factor=0.5, growth_interval=GROWTH_INTERVAL)
        self.skipped_steps = 0  # optimizer steps skipped for overflow, in all
        self.consecutive_skips = 0  # ... since the last applied step
        self._applied = True
        self._grad_norm: float | None = None

    def __call__(self, **inputs: Any) -> Any:
        with torch.autocast("cpu", dtype=torch.float16):
            return self.model(**inputs)

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def accumulating(self, last: bool):
        """Context of one micro-batch's backward: DDP reduces the gradients on the last only."""
        if last or not hasattr(self.model, "no_sync"):
            return contextlib.nullcontext()
        return self.model.no_sync()

    def backward(self, loss: torch.Tensor) -> None:
        """Backward of the (already accumulation-averaged) loss, times the loss scale."""
        self.scaler.scale(loss).backward()

    def step(self) -> bool:
        """Unscale, clip, step unless the gradients overflowed, update the scale; True if applied."""
        self.scaler.unscale_(self.optimizer)
        params = [p for g in self.optimizer.param_groups for p in g["params"] if p.grad is not None]
        norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip if self.grad_clip > 0 else math.inf)
        before = self.scaler.get_scale()
        self.scaler.step(self.optimizer)  # skipped when an unscaled gradient is inf or NaN
        self.scaler.update()
        # The scale only goes down on an overflow (backoff), so a lower scale means a skip.
        self._applied = self.scaler.get_scale() >= before
        self._grad_norm = float(norm) if self._applied else None
        self.skipped_steps += not self._applied
        self.consecutive_skips = 0 if self._applied else self.consecutive_skips + 1
        self.optimizer.zero_grad(set_to_none=True)
        return self._applied

    def was_step_applied(self) -> bool:
        return self._applied

    def get_global_grad_norm(self) -> float | None:
        return self._grad_norm

    @property
    def loss_scale(self) -> float:
        return float(self.scaler.get_scale())
