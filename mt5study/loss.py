"""The training and evaluation loss: cross-entropy in float32, plus T5X's optional z-loss.

T5X computes mT5's logits in float32 "for stability" (t5x/examples/t5/network.py, the untied
`logits_dense` with dtype float32) and adds `z_loss * log(Z)**2` per target token, log Z being the
softmax normaliser (t5x/losses.py, default coefficient 1e-4). Here:

- the logits come from the model's own forward, whose `lm_head` computes in float32
  (`mt5study.model.fp32_head_`, installed by `model.build` / `model.load_checkpoint`). The head is
  a module of the model, so under ZeRO-3 its weight is gathered when it runs and the engine's
  hooks, gradient partitioning and loss scaling all see an ordinary forward; only the matmul and
  what follows it run in float32. A model without that head gives 16-bit logits, upcast here.
- the cross-entropy and the z-loss are computed from the same float32 log-sum-exp, averaged over
  target tokens whose label is not -100 (transformers' convention; an all-ignored batch gives 0).

`model` may be the bare transformers model or a DeepSpeed/Accelerate engine wrapping it: it is
only called. No `labels=` is passed, so transformers does not compute a second (16-bit) loss.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from mt5study.batches import PAD_ID, attention_mask

IGNORE = -100  # label of a position that does not count (transformers' ignore_index)


class LossOut(NamedTuple):
    total: torch.Tensor
    """What backward is called on: cross_entropy + z_loss * mean(log Z ** 2) (float32 scalar)."""
    cross_entropy: torch.Tensor
    """Mean cross-entropy over target tokens, nats (float32 scalar): the loss that is reported."""


def shift_right(labels: torch.Tensor, start_id: int = PAD_ID) -> torch.Tensor:
    """Decoder inputs from labels: the start token, then the labels but the last; -100 -> pad.

    mT5 starts decoding with the pad id 0 (config.decoder_start_token_id), as `_shift_right` in
    transformers does.
    """
    out = labels.new_full(labels.shape, PAD_ID)
    out[..., 1:] = labels[..., :-1]
    out[..., 0] = start_id
    return out.masked_fill_(out == IGNORE, PAD_ID)


def _start_id(model) -> int:
    inner = getattr(model, "module", model)  # DeepSpeedEngine / DDP keep the model in .module
    start = getattr(getattr(inner, "config", None), "decoder_start_token_id", None)
    return PAD_ID if start is None else int(start)


def token_losses(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(cross-entropy, log Z) per position in float32; ignored positions hold 0."""
    logits = logits.float()
    keep = labels != IGNORE
    log_z = torch.logsumexp(logits, dim=-1)
    target = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return torch.where(keep, log_z - target, 0.0), torch.where(keep, log_z, 0.0)


def compute_loss(model, input_ids: torch.Tensor, labels: torch.Tensor, z_loss: float = 0.0) -> LossOut:
    """Cross-entropy (and z-loss) of a batch, logits and loss in float32 whatever the model's dtype."""
    out = model(input_ids=input_ids, attention_mask=attention_mask(input_ids),
                decoder_input_ids=shift_right(labels, _start_id(model)), use_cache=False)
    ce_tok, log_z = token_losses(out.logits, labels)
    n = (labels != IGNORE).sum().clamp(min=1)  # tokens that count
    ce = ce_tok.sum() / n
    if not z_loss:
        return LossOut(ce, ce)
    return LossOut(ce + z_loss * log_z.square().sum() / n, ce)
