"""Sizes and token budgets: non-embedding parameters, FLOPs per token, tokens per trial by rule.

Two rules (params `scaling.budget.rule`):
- tokens_per_parameter: D = r x N, N all parameters (Chinchilla's count; its compute-optimal r
  is ~20) or the non-embedding ones (Kaplan et al. 2020; `budget.count`). Compute per trial then
  grows as N^2.
- iso_flop: every trial spends the same model FLOPs C, so D = C / (FLOPs per token): smaller
  models see more tokens (the iso-FLOP slices of Hoffmann et al. 2022).
FLOPs are `mt5study.model.flops_per_example` (matmuls, forward + backward, the head included).
"""

from __future__ import annotations

from mt5study.model import PRESETS, count_parameters, flops_per_example


def non_embedding_parameters(preset: str) -> int:
    """Parameters minus the shared input embedding and the untied output layer (2 x vocab x d_model)."""
    p = PRESETS[preset]
    return count_parameters(preset) - 2 * p["vocab_size"] * p["d_model"]


def flops_per_token(preset: str, input_length: int, target_length: int, vocab_size: int | None = None) -> float:
    """Model FLOPs per token (inputs + targets) of one training example."""
    return flops_per_example(preset, input_length, target_length, vocab_size) / (input_length + target_length)


def budget_tokens(budget, preset: str, input_length: int, target_length: int,
                  vocab_size: int | None = None) -> int:
    """Tokens (inputs + targets) one trial of `preset` trains on under `budget` (a config.Budget)."""
    if budget.rule == "tokens_per_parameter":
        n = non_embedding_parameters(preset) if budget.count == "non_embedding" else count_parameters(preset, vocab_size)
        return int(round(budget.tokens_per_parameter * n))
    return int(round(budget.flops / flops_per_token(preset, input_length, target_length, vocab_size)))
