"""Study params: a base run params file, axes to vary, and a token budget per trial.

    study:
      name: precision
      base: params/cpu/mini.yaml
      axes:                              # the grid: every combination is a trial
        run.precision: [fp32, bf16, fp16]
        run.zero_stage: [0, 3]
      budget_tokens: 61440               # tokens (inputs + targets) each trial trains on
      fixed: {run.eval_every: 20}        # overrides applied to every trial

Every trial's params are validated (base + fixed + axis values + derived steps) before any
trial launches: a value the config rejects stops the study naming the trial and key.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mt5study import config
from mt5study.config import ConfigError, Section, TrainParams
from mt5study.slurm_config import SlurmConfig


class SearchConfig(Section):
    """Early-stopping search over the axes (Optuna; see mt5study.studies.search)."""

    sampler: Literal["grid", "tpe"] = "grid"
    pruner: Literal["successive_halving", "hyperband", "none"] = "successive_halving"
    reduction_factor: int = Field(default=3, ge=2)  # keep 1/factor of trials at each rung
    rungs: int = Field(default=3, ge=2)
    """Budget rungs: the full token budget and its 1/factor, 1/factor^2 ... (rungs in all)."""
    n_trials: int | None = Field(default=None, gt=0)  # None: the whole grid (sampler=grid)
    metric: Literal["eval_loss"] = "eval_loss"


class LRRangeConfig(Section):
    """Smith's learning-rate range test: lr grows geometrically over one short run."""

    min_lr: float = Field(gt=0.0)
    max_lr: float = Field(gt=0.0)
    steps: int = Field(default=60, gt=2)

    @model_validator(mode="after")
    def _ordered(self) -> "LRRangeConfig":
        if self.min_lr >= self.max_lr:
            raise ValueError(f"min_lr={self.min_lr} must be below max_lr={self.max_lr}")
        return self


class NoiseScaleConfig(Section):
    """Gradient noise scale measured on a trial's checkpoints (McCandlish et al. 2018)."""

    b_small: int = Field(default=4, gt=0)  # examples per small-batch gradient
    b_big: int = Field(default=64, gt=0)  # examples per big-batch gradient
    repeats: int = Field(default=8, gt=0)  # big batches averaged per measurement


class Study(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Study name: its folder is outputs/<name>."""
    base: str
    """Base run params file (relative to the repository root)."""
    axes: dict[str, list[Any]] = Field(min_length=1)
    """Dotted run keys -> values; the grid is their product. `run.global_batch` sets grad_accum."""
    budget_tokens: int = Field(gt=0)
    """Tokens (inputs + targets) per trial: steps = budget / tokens per step."""
    fixed: dict[str, Any] = {}
    seeds: list[int] | None = None
    """Seeds (`run.seed`: initialisation and data order) every grid point trains with, so each
    compared number carries its spread (mean ± sd over seeds). None: the base file's seed only,
    one repeat, and the tables say that no spread can be given."""
    concurrency: int = Field(default=1, gt=0)
    """Grid trials trained side by side, each one process (world size 1). On a CPU of C cores,
    set run.threads to C / concurrency in `fixed`: two 1-thread processes of a small model do
    nearly twice the work of one 2-thread process (scripts/bench_concurrency.py)."""
    kind: Literal["grid", "search"] = "grid"
    search: SearchConfig = SearchConfig()
    lr_range: LRRangeConfig | None = None
    noise_scale: NoiseScaleConfig | None = None

    @model_validator(mode="after")
    def _axes(self) -> "Study":
        for key, values in self.axes.items():
            if not values:
                raise ValueError(f"axes.{key}: needs at least one value")
            if len(set(map(repr, values))) != len(values):
                raise ValueError(f"axes.{key}: repeated values {values}")
        if self.seeds is not None:
            if not self.seeds or len(set(self.seeds)) != len(self.seeds):
                raise ValueError(f"seeds: needs distinct values, got {self.seeds}")
            if "run.seed" in self.axes or "run.seed" in self.fixed:
                raise ValueError("seeds: set the seeds here or as run.seed in axes/fixed, not both")
        return self


class StudyParams(Section):
    study: Study
    slurm: SlurmConfig | None = None
    """Resources of the study's jobs under `mt5study slurm submit`."""


def resolve(path: str | Path) -> Path:
    from mt5study.paths import ROOT

    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def trial_name(values: dict[str, Any]) -> str:
    """A folder-safe, stable name: 'precision=bf16__zero_stage=3'."""
    parts = []
    for key, v in values.items():
        short = key.split(".")[-1]
        parts.append(f"{short}={v}")
    return re.sub(r"[^A-Za-z0-9_.=+-]", "_", "__".join(parts))


def grid(study: Study) -> list[dict[str, Any]]:
    """Every combination of the axes, in axis order; with `seeds`, each combination once per seed
    (seed by seed: every setting has a first result before any gets its second)."""
    keys = list(study.axes)
    points = [dict(zip(keys, combo)) for combo in itertools.product(*study.axes.values())]
    if study.seeds is None:
        return points
    return [{**p, "run.seed": s} for s in study.seeds for p in points]


def axis_keys(study: Study) -> list[str]:
    """The dotted keys a trial varies: the axes, and run.seed when the study repeats seeds."""
    return [*study.axes, *(["run.seed"] if study.seeds is not None else [])]


def trial_overrides(study: Study, base: TrainParams, values: dict[str, Any], steps: int | None = None) -> dict[str, Any]:
    """The overrides that turn the base run into this trial (batch arithmetic and steps derived)."""
    ov = {**study.fixed, **values}
    run = base.run
    if "run.global_batch" in ov:
        gb = ov["run.global_batch"]
        micro = ov.get("run.micro_batch", run.micro_batch)
        per_step = micro * run.world_size
        if not isinstance(gb, int) or gb % per_step:
            raise ConfigError(
                f"{study.name}: run.global_batch={gb!r} is not a multiple of micro_batch {micro} x world size {run.world_size}")
        ov["run.grad_accum"] = gb // per_step
    gb = ov.get("run.global_batch") or ov.get("run.micro_batch", run.micro_batch) * ov.get("run.grad_accum", run.grad_accum) * run.world_size
    tokens_per_step = gb * (base.data.input_length + base.data.target_length)
    ov["run.steps"] = steps or max(1, study.budget_tokens // tokens_per_step)
    return ov


def validate_trials(params: StudyParams, source: str) -> tuple[Path, list[tuple[str, dict[str, Any]]]]:
    """Validate every trial's params before anything launches; return (base path, trials)."""
    study = params.study
    base_path = resolve(study.base)
    base = config.load(base_path)
    if not isinstance(base, TrainParams):
        raise ConfigError(f"{source}: study.base={study.base} is not a training params file")
    trials, runs = [], []
    for values in grid(study):
        name = trial_name(values)
        ov = trial_overrides(study, base, values)
        try:
            runs.append((name, config.load(base_path, ov).run))
        except ConfigError as e:
            raise ConfigError(f"{source}: trial {name} ({values}) is invalid:\n{e}") from None
        trials.append((name, ov))
    if study.concurrency > 1:
        check_side_by_side(runs, study.concurrency, f"{source}: study.concurrency")
    return base_path, trials


def check_side_by_side(runs: list[tuple[str, Any]], concurrency: int, key: str) -> None:
    """Trials trained `concurrency` at a time must each be one process with run.threads set: a
    launched world brings its own processes, and unset threads would give every trial all the
    cores (and oversubscribe them). `runs`: (trial name, its validated RunConfig)."""
    for name, run in runs:
        if run.world_size != 1:
            raise ConfigError(f"{key}={concurrency}: trial {name} runs {run.world_size} processes; side by side "
                              "only one-process trials (run.one_process: true, or a world of one)")
        if run.threads is None:
            raise ConfigError(f"{key}={concurrency}: trial {name} has no run.threads; set it (cores / "
                              "concurrency) so that the trials side by side do not oversubscribe the cores")
