"""Cheap measurements that guide the batch/LR search before (or instead of) the grid.

- `lr_range_test`: Smith (2017, arXiv 1506.01186 sec. 3.3): one short run whose learning rate
  grows geometrically; the loss-vs-lr curve brackets the usable rates.
- `gradient_noise_scale`: McCandlish et al. (2018, arXiv 1812.06162): B_simple = tr(Sigma)/|G|^2,
  from squared gradient norms at a small and a big batch, measured on a trial's weights at its
  start (the seeded initialisation) and end (its saved model) - an estimate of the critical
  batch size beyond which larger batches stop saving steps.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mt5study import batches, config, records
from mt5study.studies.config import StudyParams, resolve
from mt5study.studies.runner import run_trial, study_dir


def lr_range_test(params: StudyParams, source: str, out_dir: str | Path | None = None,
                  keep_stale: bool = False) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Run the LR range test of the study's base run; return the curve and suggested rates."""
    study = params.study
    if study.lr_range is None:
        raise config.ConfigError(f"{source}: study.lr_range is not set")
    lr = study.lr_range
    ov = {**study.fixed, "optim.schedule": "exponential", "optim.lr": lr.max_lr,
          "optim.range_start_ratio": lr.min_lr / lr.max_lr, "optim.warmup_steps": 0,
          "run.steps": lr.steps, "run.log_every": 1, "run.eval_every": 0, "run.eval_steps": [],
          "run.checkpoint_every": 0}
    base_path = resolve(study.base)
    config.load(base_path, ov)  # validate before launching
    out = study_dir(params, out_dir) / "lr_range"
    run_trial(out, base_path, ov, keep_stale=keep_stale)
    curve = pd.DataFrame(records.read_metrics(out / "metrics.jsonl"))[["step", "lr", "loss"]]
    return curve, suggest_lr(curve)


def suggest_lr(curve: pd.DataFrame, smoothing: float = 0.8) -> dict[str, Any]:
    """Rates read off a range-test curve: steepest descent, and a tenth of the minimum's rate."""
    loss = curve["loss"].to_numpy(dtype=float)
    lr = curve["lr"].to_numpy(dtype=float)
    finite = np.isfinite(loss)
    loss, lr = loss[finite], lr[finite]
    smooth = np.empty_like(loss)
    acc = 0.0
    for i, v in enumerate(loss):  # bias-corrected exponential moving average
        acc = smoothing * acc + (1 - smoothing) * v
        smooth[i] = acc / (1 - smoothing ** (i + 1))
    slope = np.gradient(smooth, np.log(lr))
    i_min = int(np.argmin(smooth))
    i_steep = int(np.argmin(slope[: max(i_min, 1)]))
    return {"lr_steepest": float(lr[i_steep]), "lr_min_loss": float(lr[i_min]),
            "lr_min_loss_over_10": float(lr[i_min] / 10), "min_smoothed_loss": float(smooth[i_min])}


def _squared_grad_norm(model: torch.nn.Module) -> float:
    return float(sum((p.grad.detach().float() ** 2).sum() for p in model.parameters() if p.grad is not None))


def measure_noise_scale(model: torch.nn.Module, dataset: Any, b_small: int, b_big: int, repeats: int,
                        seed: int = 0) -> dict[str, float]:
    """B_simple of `model` on `dataset`: squared gradient norms at b_small and at b_big.

    Each repeat draws b_big examples; the gradient of each b_small chunk gives |G_small|^2 (their
    mean), the mean of the chunk gradients is the b_big gradient, |G_big|^2.
    """
    from mt5study.studies.noise import noise_scale

    if b_big % b_small or b_big <= b_small:
        raise ValueError(f"b_big={b_big} must be a multiple of b_small={b_small} and larger")
    if len(dataset) < b_big:
        raise ValueError(f"dataset has {len(dataset)} examples, fewer than b_big={b_big}")
    rng = np.random.default_rng(seed)
    ds = dataset.with_format("numpy")
    model.train()
    small_sq, big_sq = [], []
    params = [p for p in model.parameters() if p.requires_grad]
    for _ in range(repeats):
        idx = rng.choice(len(ds), size=b_big, replace=False)
        total = [torch.zeros_like(p) for p in params]
        chunk_sq = []
        for c in range(b_big // b_small):
            rows = ds[idx[c * b_small:(c + 1) * b_small]]
            ids = torch.as_tensor(np.asarray(rows["input_ids"], dtype=np.int64))
            labels = torch.as_tensor(np.asarray(rows["labels"], dtype=np.int64))
            model.zero_grad(set_to_none=True)
            model(input_ids=ids, attention_mask=batches.attention_mask(ids), labels=labels).loss.backward()
            chunk_sq.append(_squared_grad_norm(model))
            for t, p in zip(total, params):
                t += p.grad.detach()
        n = b_big // b_small
        small_sq.append(float(np.mean(chunk_sq)))
        big_sq.append(float(sum(((t / n) ** 2).sum() for t in total)))
    model.zero_grad(set_to_none=True)
    est = noise_scale(np.array(small_sq), np.array(big_sq), b_small, b_big)
    return {"b_simple": float(est.b_simple), "g_small_sq": float(np.mean(small_sq)),
            "g_big_sq": float(np.mean(big_sq)), "b_small": b_small, "b_big": b_big, "repeats": repeats}


def gradient_noise_scale(params: StudyParams, source: str, trial_dir: str | Path) -> pd.DataFrame:
    """B_simple at the start (seeded init) and end (saved model) of a trained trial."""
    from mt5study import model as model_lib

    cfg = params.study.noise_scale
    if cfg is None:
        raise config.ConfigError(f"{source}: study.noise_scale is not set")
    trial_dir = Path(trial_dir)
    run_cfg = config.validate(records.read_json(trial_dir / "config.json"), str(trial_dir / "config.json"))
    splits = batches.load_splits(run_cfg.data, run_cfg.run.seed)
    vocab = run_cfg.model.vocab_size or splits["vocab_size"]
    torch.manual_seed(run_cfg.run.seed)  # the same initialisation the trial started from
    start = model_lib.build(run_cfg.model.preset, vocab_size=vocab, dropout_rate=run_cfg.model.dropout_rate,
                            checkpoint=run_cfg.model.checkpoint)
    end = model_lib.load_checkpoint(trial_dir / "model")
    summary = records.read_json(trial_dir / "summary.json")
    rows = []
    for label, net, step in (("start", start, 0), ("end", end, summary.get("steps"))):
        m = measure_noise_scale(net, splits["train"], cfg.b_small, cfg.b_big, cfg.repeats, seed=run_cfg.run.seed)
        rows.append({"trial": trial_dir.name, "point": label, "step": step, **m})
    return pd.DataFrame(rows)
