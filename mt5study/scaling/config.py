"""Params of the scaling study (`scaling:` files), validated before any trial launches.

    scaling:
      name: scaling
      base: params/cpu/mini.yaml          # the run every trial varies
      sizes: [ladder-1, ladder-2, ladder-3, ladder-4]
      holdout: ladder-4                   # left out of the fit, predicted, then measured (default: largest)
      axes: {run.global_batch: [8, 16, 32], optim.lr: [...]}   # the grid of every size
      budget: {rule: iso_flop, flops: 2.0e12}                  # or {rule: tokens_per_parameter, ...}
      fixed: {run.one_process: true}      # overrides of every trial
      fit: {x: parameters, bootstrap: 400, confidence: 0.9}
      steptime: {...}                     # the workers axis (1 and 2 ranks, ZeRO 0-3)
      recommend: {...}                    # the cluster recipe per mt5-* preset

A size list with fewer than three sizes to fit, an unknown preset, a holdout outside the sizes or
an axis that is not global batch x learning rate is a ConfigError naming the file and key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mt5study import config
from mt5study.config import PRESETS, Section
from mt5study.slurm_config import SlurmConfig
from mt5study.studies.config import SearchConfig

AXES = ("run.global_batch", "optim.lr")
MIN_FIT_SIZES = 3  # a power law through two points has no residual and no interval


class Budget(Section):
    """Tokens per trial of each size, by one rule (mt5study.scaling.budget)."""

    rule: Literal["tokens_per_parameter", "iso_flop"]
    tokens_per_parameter: float | None = Field(default=None, gt=0.0)
    """tokens_per_parameter: tokens (inputs + targets) = this x parameters (Chinchilla's
    compute-optimal ratio is ~20, counting all parameters)."""
    count: Literal["all", "non_embedding"] = "all"
    """Which parameters tokens_per_parameter counts: all (Hoffmann et al. 2022) or non-embedding
    (Kaplan et al. 2020)."""
    flops: float | None = Field(default=None, gt=0.0)
    """iso_flop: model FLOPs every trial spends (mt5study.model.flops_per_example, matmuls,
    forward + backward), so tokens = flops / FLOPs per token of the size."""
    min_steps: int = Field(default=1, gt=0)
    """A trial shorter than this many optimizer steps at its batch is refused (too short to fit)."""

    @model_validator(mode="after")
    def _rule_value(self) -> "Budget":
        need = {"tokens_per_parameter": "tokens_per_parameter", "iso_flop": "flops"}[self.rule]
        if getattr(self, need) is None:
            raise ValueError(f"rule {self.rule} needs budget.{need}")
        other = {"tokens_per_parameter": "flops", "iso_flop": "tokens_per_parameter"}[self.rule]
        if getattr(self, other) is not None:
            raise ValueError(f"budget.{other} is not used by rule {self.rule}; remove it")
        return self


X = Literal["parameters", "compute", "tokens"]


class FitConfig(Section):
    lr_x: X = "parameters"
    """What eta* is a power law of: non-embedding parameters N, a trial's model FLOPs C, or its tokens D."""
    batch_x: X = "tokens"
    """What B* (in tokens per step) is a power law of (the Step Law: B* follows mostly D)."""
    bootstrap: int = Field(default=400, ge=20)  # residual-bootstrap replicates of every fit
    confidence: float = Field(default=0.9, gt=0.0, lt=1.0)  # central interval of the replicates
    seed: int = 0  # of the bootstrap's random draws


class StepTimeConfig(Section):
    """The workers axis measured here: one run per (world size, ZeRO stage), then the model's error."""

    preset: str
    runs: list[list[int]] = [[1, 0], [2, 0], [2, 1], [2, 2], [2, 3]]
    """(world size, ZeRO stage) pairs; the first must be (1, 0): it calibrates MFU."""
    steps: int = Field(default=16, gt=2)  # optimizer steps per run
    warmup_steps: int = Field(default=4, ge=1)  # first steps left out of the median step time
    micro_batch: int = Field(default=8, gt=0)  # examples per rank per step
    overlap: float = Field(default=0.0, ge=0.0, le=1.0)
    """Fraction of communication hidden behind compute (gloo on shared CPU cores: none)."""
    bench_mib: float = Field(default=16.0, gt=0.0)  # MiB per collective in the bandwidth benchmark
    tolerance: float = Field(default=0.25, gt=0.0)  # the goal: |predicted / measured - 1| <= this

    @model_validator(mode="after")
    def _runs(self) -> "StepTimeConfig":
        for r in self.runs:
            if len(r) != 2 or r[0] < 1 or r[1] not in (0, 1, 2, 3):
                raise ValueError(f"runs: each is [world size >= 1, ZeRO stage 0-3], got {r}")
        if not self.runs or self.runs[0] != [1, 0]:
            raise ValueError(f"runs: the first must be [1, 0] (it calibrates MFU), got {self.runs[:1]}")
        return self


class Device(Section):
    """One accelerator of the recommendation (sources named in the params file's comments)."""

    peak_tflops: float = Field(gt=0.0)  # dense bf16 TFLOP/s of one device
    memory_gib: float = Field(gt=0.0)  # device memory, GiB (a 40 GB A100 is 40 GiB)
    gpus_per_node: int = Field(gt=0)
    intra_node_gbps: float = Field(gt=0.0)  # GB/s per GPU within a node (NVLink)
    inter_node_gbps: float = Field(gt=0.0)  # GB/s per GPU between nodes (InfiniBand)


class RecommendConfig(Section):
    presets: list[str] = ["mt5-small", "mt5-base", "mt5-large", "mt5-xl", "mt5-xxl"]
    tokens: float = Field(gt=0.0)
    """Training tokens (inputs + targets) of the cluster run."""
    input_length: int = Field(default=1024, gt=0)
    target_length: int = Field(default=229, gt=0)
    precision: Literal["bf16", "fp32"] = "bf16"
    mfu: float = Field(default=0.4, gt=0.0, le=1.0)  # assumed model FLOPs utilisation
    overlap: float = Field(default=0.5, ge=0.0, le=1.0)  # communication hidden behind compute
    nodes: list[int] = [1, 2, 4, 8]
    devices: dict[str, Device] = Field(min_length=1)


class Scaling(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Study name: its folder is outputs/<name>."""
    base: str
    """Base run params file (relative to the repository root)."""
    sizes: list[str] = Field(min_length=MIN_FIT_SIZES + 1)
    holdout: str | None = None
    """The size left out of the fit and predicted; None = the largest."""
    axes: dict[str, list[Any]]
    """The grid of the first (smallest) size; every size's own grid with lr_by_width."""
    lr_by_width: bool = False
    """Each size's lr values = axes' x (d_model of the first size / its d_model)^lr_width_exponent,
    3 significant digits, so one grid ratio brackets every size's optimum instead of the larger
    sizes' falling off its low edge. Exponent 1 is muP's rule for Adam's hidden layers (Yang et
    al. 2022); at a fixed tokens-per-parameter budget the optimum can fall faster (params say)."""
    lr_width_exponent: float = Field(default=1.0, gt=0.0, le=4.0)
    budget: Budget
    fixed: dict[str, Any] = {}
    search: SearchConfig | None = None
    """Also run Optuna's pruned search over the same grid for the sizes in `search_sizes`."""
    search_sizes: list[str] = []
    concurrency: int = Field(default=1, gt=0)
    """Grid trials of a size trained side by side (studies' `study.concurrency`; one-process trials
    with run.threads set in `fixed`). The workers axis always runs alone: it times steps."""
    fit: FitConfig = FitConfig()
    steptime: StepTimeConfig | None = None
    recommend: RecommendConfig | None = None

    @model_validator(mode="after")
    def _check(self) -> "Scaling":
        for s in [*self.sizes, *self.search_sizes, *([self.holdout] if self.holdout else [])]:
            if s not in PRESETS:
                raise ValueError(f"size {s!r} is not a model preset; choose from {sorted(PRESETS)}")
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError(f"sizes: repeated presets {self.sizes}")
        from mt5study.scaling.budget import non_embedding_parameters

        counts = [non_embedding_parameters(s) for s in self.sizes]
        if counts != sorted(counts) or len(set(counts)) != len(counts):
            raise ValueError(f"sizes: list them from smallest to largest (non-embedding parameters "
                             f"{dict(zip(self.sizes, counts))})")
        if self.holdout is not None and self.holdout not in self.sizes:
            raise ValueError(f"holdout {self.holdout!r} is not one of sizes {self.sizes}")
        if len(self.sizes) - 1 < MIN_FIT_SIZES:
            raise ValueError(f"sizes: {len(self.sizes) - 1} sizes left to fit besides the holdout; "
                             f"a power law needs at least {MIN_FIT_SIZES}")
        if sorted(self.axes) != sorted(AXES):
            raise ValueError(f"axes must be exactly {list(AXES)}, got {list(self.axes)}")
        for key, values in self.axes.items():
            if len(values) < 3 or len(set(values)) != len(values) or values != sorted(values):
                raise ValueError(f"axes.{key}: needs at least 3 distinct increasing values (a quadratic "
                                 f"fit per axis), got {values}")
        for key in ("model.preset", *AXES, "run.steps"):
            if key in self.fixed:
                raise ValueError(f"fixed.{key}: set by the study (sizes, axes, budget), not fixed")
        if self.budget.rule == "iso_flop" and "compute" in (self.fit.lr_x, self.fit.batch_x):
            raise ValueError("fit: every trial has the same compute under budget.rule iso_flop; "
                             "fit against parameters or tokens")
        if self.search_sizes and self.search is None:
            raise ValueError("search_sizes needs a search section")
        for s in self.search_sizes:
            if s not in self.sizes:
                raise ValueError(f"search_sizes: {s!r} is not one of sizes {self.sizes}")
        return self


class ScalingParams(Section):
    scaling: Scaling
    slurm: SlurmConfig | None = None


def load(path: str | Path, overrides: dict[str, Any] | None = None) -> ScalingParams:
    """Load and validate a scaling params file (errors name the file, key and value)."""
    return config.load(path, overrides, schema=ScalingParams)


def holdout(s: Scaling) -> str:
    """The held-out size: the named one, else the largest."""
    return s.holdout or s.sizes[-1]
