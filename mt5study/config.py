"""Typed, validated params: every run and study is configured by one YAML file loaded here.

`load(path)` reads `params/*.yaml` into frozen pydantic models. Unknown keys, wrong types,
out-of-range values and broken batch arithmetic raise `ConfigError` naming the file, the key and
the bad value, before any process starts. Overrides (papermill, `--set key=value`) are merged
into the raw YAML and go through the same validation.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ConfigError(ValueError):
    """A params file or override that cannot be used: names the file, key and value."""


# Section lives in its own module so that slurm_config (and others) need not import config.
from mt5study.sections import Section  # noqa: E402,F401  (re-exported: mt5study.config.Section)
from mt5study.slurm_config import SlurmConfig  # noqa: E402

from mt5study.ladder import LADDER  # noqa: E402

PRESETS = ("tiny", "mini", "mt5-small", "mt5-base", "mt5-large", "mt5-xl", "mt5-xxl", *LADDER)


class ModelConfig(Section):
    preset: Literal[PRESETS]  # type: ignore[valid-type]
    """Architecture preset (see mt5study.model.PRESETS)."""
    checkpoint: str | None = None
    """Released or saved weights to start from: a local folder or a hub name; None = random init."""
    vocab_size: int | None = Field(default=None, gt=0)
    """Override of the preset's vocabulary (e.g. the ETL tokenizer's size); None = preset's."""
    dropout_rate: float = Field(default=0.0, ge=0.0, lt=1.0)
    """mT5 pretrains without dropout; fine-tuning uses 0.1."""
    activation_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~1/3 more compute."""
    init: Literal["t5x", "hf"] = "t5x"
    """Random initialisation (unused with a checkpoint): "t5x" draws the untied output layer with
    std d_model**-0.5, so the loss starts near ln(vocab); "hf" is transformers' (std 1.0 head,
    loss at init 3-10x ln(vocab)), kept for comparison. See mt5study.model.init_passes."""
    z_loss: float = Field(default=0.0, ge=0.0)
    """Coefficient of the z-loss, z_loss * mean(logsumexp(logits)**2) over target tokens, added to
    the cross-entropy (mt5study.loss); T5X's default is 1e-4; 0 = off."""


class SyntheticData(Section):
    """A small seeded dataset built in code (tests, and until an ETL output is named)."""

    num_train: int = Field(default=512, gt=0)  # examples
    num_validation: int = Field(default=64, gt=0)  # examples
    vocab_size: int = Field(default=512, gt=8)  # token ids drawn from [2, vocab_size)


class DataConfig(Section):
    path: str | None = None
    """ETL output folder (relative to the repository root unless absolute); None = synthetic."""
    synthetic: SyntheticData = SyntheticData()
    input_length: int = Field(default=64, gt=0)  # encoder tokens per example
    target_length: int = Field(default=16, gt=0)  # decoder tokens per example
    num_workers: int = Field(default=0, ge=0)  # DataLoader worker processes per rank


class OptimConfig(Section):
    name: Literal["adamw", "adafactor"] = "adamw"
    lr: float = Field(gt=0.0)
    """Peak learning rate (for inverse_sqrt: the rate during warm-up's plateau)."""
    weight_decay: float = Field(default=0.0, ge=0.0)
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.999, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-8, gt=0.0)
    schedule: Literal["inverse_sqrt", "cosine", "constant", "exponential"] = "constant"
    """exponential: lr * range_start_ratio**(1 - s/(steps-1)), the LR range test's sweep."""
    warmup_steps: int = Field(default=0, ge=0)  # optimizer steps of linear warm-up
    min_lr_ratio: float = Field(default=0.0, ge=0.0, le=1.0)  # cosine floor, fraction of lr
    grad_clip: float = Field(default=1.0, ge=0.0)  # max global grad norm; 0 disables
    range_start_ratio: float = Field(default=1e-3, gt=0.0, le=1.0)  # exponential: first lr / lr
    scale_parameter: bool = False
    """Adafactor only: multiply each step by the parameter's RMS (floor 1e-3), as T5X and Mesh
    TensorFlow's Adafactor do by default (multiply_by_parameter_scale=True), so every weight moves
    the same fraction of its size; False = the same absolute step for every weight (transformers'
    documented T5 fine-tuning setting). Only where the optimizer sees whole weights: ZeRO-0 in
    fp32 (TrainParams refuses it where DeepSpeed flattens them)."""
    embedding_lr: Literal["same", "relative"] = "same"
    """The shared token embedding's learning rate: `same` as every weight, or `relative`:
    lr x sqrt(d_model), the ratio of its T5X init RMS (1.0) to the dense kernels' (d_model^-0.5).
    Adam's step is the same size for every weight, so with `same` the embedding moves ~sqrt(d_model)
    times slower relative to its size than the kernels; T5X's Adafactor scales each step by the
    parameter's RMS (multiply_by_parameter_scale), which `relative` reproduces for the embedding."""

    @model_validator(mode="after")
    def _scaled_steps(self) -> "OptimConfig":
        if self.scale_parameter and self.name != "adafactor":
            raise ValueError(f"optim.scale_parameter=true is Adafactor's; optim.name is {self.name!r}")
        if self.scale_parameter and self.embedding_lr == "relative":
            raise ValueError("optim.embedding_lr=relative with optim.scale_parameter=true scales the "
                             "embedding's step twice; scale_parameter already sizes it to its RMS")
        return self


class RunConfig(Section):
    seed: int = 0
    steps: int = Field(gt=0)  # optimizer steps
    micro_batch: int = Field(gt=0)  # examples per process per forward
    grad_accum: int = Field(default=1, gt=0)  # micro-batches per optimizer step
    global_batch: int | None = Field(default=None, gt=0)
    """Examples per optimizer step; must equal micro_batch * grad_accum * world size."""
    nodes: int = Field(default=1, gt=0)
    processes_per_node: int = Field(default=1, gt=0)  # GPUs per node, or CPU processes
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    zero_stage: int = Field(default=0, ge=0, le=3)
    offload_optimizer: bool = False  # ZeRO-Offload of optimizer states to CPU memory
    offload_params: bool = False  # ZeRO-3 only: parameters in CPU memory
    zero3_init: bool = True
    """ZeRO-3: partition parameters as they are created (DeepSpeed zero.Init); False builds the
    whole model on every rank first (the old path, kept to measure it: scripts/bench_memory.py)."""
    fp16_engine: Literal["auto", "deepspeed", "torch_amp"] = "auto"
    """fp16's engine: `auto` is DeepSpeed's fp16 engine on a GPU and torch AMP (ZeRO-0 only) on a CPU,
    whatever the CPU (DeepSpeed's CPU accelerator accepts fp16 only on AVX512-FP16 CPUs, and there its
    non-ZeRO wrapper's update differs from ZeRO-3's: README, 2026-12-01), so the same params give the
    same run on every CPU; `deepspeed` asks for DeepSpeed's engine (unsupported where its accelerator
    refuses fp16); `torch_amp` for torch AMP (ZeRO-0 only)."""
    fp16_initial_scale_power: int = Field(default=16, ge=0, le=32)  # initial loss scale 2**k
    fp16_max_skipped_steps: int = Field(default=24, gt=0)
    """fp16: consecutive optimizer steps the loss scaler may skip (gradient overflow) before the
    run ends as `diverged`; from the initial scale 2**16 that is the scale halved to 2**-8 with the
    gradients still overflowing. A non-finite loss ends any run as `diverged` at once."""
    one_process: bool = False
    """Run as one process at ZeRO-0 with the same global batch: nodes x processes_per_node is
    folded into grad_accum, zero_stage becomes 0 and offload off (the resolved config.json shows
    the folded values). For trials whose question is neither the ZeRO stage nor the world size:
    in fp32 ZeRO-0 and ZeRO-3 curves agree to ~1e-5, and one process needs no launcher."""
    threads: int | None = Field(default=None, gt=0)
    """CPU threads of each process's kernels (torch.set_num_threads); None: the launch's share of
    the cores (OMP_NUM_THREADS, cores / processes). A study that trains trials side by side sets
    1 (`study.concurrency`); a reduction may round differently at another thread count."""
    launcher: Literal["auto", "accelerate"] = "auto"
    """auto: a world of one runs as one plain process (`mt5study train`, which sets up its own
    1-process group), several processes under `accelerate launch`; accelerate: always launched."""
    log_every: int = Field(default=1, gt=0)  # steps between metric lines
    eval_every: int = Field(default=0, ge=0)  # steps between held-out evaluations; 0 = end only
    eval_steps: list[int] = []  # further steps to evaluate at (e.g. a search's rungs)
    eval_batches: int = Field(default=2, gt=0)  # micro-batches per rank per evaluation
    checkpoint_every: int = Field(default=0, ge=0)  # steps between checkpoints; 0 = end only
    peak_tflops_per_device: float | None = Field(default=None, gt=0.0)
    """Dense peak of one device at the run's precision, for MFU; None = MFU not reported."""

    @property
    def world_size(self) -> int:
        return self.nodes * self.processes_per_node

    @model_validator(mode="before")
    @classmethod
    def _fold_world(cls, data: Any) -> Any:
        """one_process: the world's examples per step move into gradient accumulation."""
        if not isinstance(data, dict) or data.get("one_process") is not True:
            return data
        nodes, per_node, accum = (data.get(k, 1) for k in ("nodes", "processes_per_node", "grad_accum"))
        if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in (nodes, per_node, accum)):
            return data  # the field checks name the bad value
        return {**data, "nodes": 1, "processes_per_node": 1, "grad_accum": accum * nodes * per_node,
                "zero_stage": 0, "offload_optimizer": False, "offload_params": False}

    @model_validator(mode="after")
    def _batch_arithmetic(self) -> "RunConfig":
        expected = self.micro_batch * self.grad_accum * self.world_size
        if self.global_batch is not None and self.global_batch != expected:
            raise ValueError(
                f"global_batch={self.global_batch} but micro_batch {self.micro_batch} x grad_accum "
                f"{self.grad_accum} x world size {self.world_size} "
                f"(nodes {self.nodes} x processes_per_node {self.processes_per_node}) = {expected}"
            )
        if self.offload_params and self.zero_stage != 3:
            raise ValueError(f"offload_params needs zero_stage 3, got zero_stage={self.zero_stage}")
        return self

    @property
    def effective_global_batch(self) -> int:
        return self.micro_batch * self.grad_accum * self.world_size


class TrainParams(Section):
    """One training run (pretraining or fine-tuning)."""

    model: ModelConfig
    data: DataConfig = DataConfig()
    optim: OptimConfig
    run: RunConfig
    slurm: SlurmConfig | None = None
    """Resources when submitted with `mt5study slurm submit`; None = the defaults."""

    @model_validator(mode="after")
    def _cross(self) -> "TrainParams":
        if self.optim.name == "adafactor" and self.run.precision == "fp16":
            # Adafactor's factored second moments underflow in fp16; T5 never trained so.
            raise ValueError("optim.name=adafactor with run.precision=fp16 is not supported")
        if self.optim.scale_parameter and (self.run.zero_stage > 0 or self.run.precision == "bf16"):
            # DeepSpeed hands the optimizer flat fp32 partitions under ZeRO (sub-groups of
            # sub_group_size elements at stage 3) and under its bf16 optimizer: Adafactor's RMS
            # would then be taken over a chunk of many weights, not over each weight as T5X's is.
            raise ValueError(
                f"optim.scale_parameter=true needs each weight as its own tensor in the optimizer; "
                f"run.zero_stage={self.run.zero_stage}, run.precision={self.run.precision} gives it "
                "DeepSpeed's flat partitions (use zero_stage 0 in fp32, or scale_parameter false)")
        return self


# Top-level key of a params file -> the schema that reads it ("module:Class", imported lazily
# so that config.py stays free of heavy imports). Files with none of these keys are TrainParams.
KINDS: dict[str, str] = {
    "etl": "mt5study.data.config:ETLParams",
    "study": "mt5study.studies.config:StudyParams",
    "pipeline": "mt5study.pipeline:PipelineParams",
    "qa": "mt5study.qa.config:QAParams",
    "translation": "mt5study.translation.config:TranslationParams",
    "scaling": "mt5study.scaling.config:ScalingParams",
}


class _Loader(yaml.SafeLoader):
    """SafeLoader that reads 1e-3 as a float (YAML 1.1 needs a dot: '1.0e-3')."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d[\d_]*)?(?:\.\d*)?(?:[eE][-+]?\d+)$|^[-+]?\d[\d_]*\.\d*$|^[-+]?\.\d+$"),
    list("-+0123456789."),
)


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, raising ConfigError for a missing, unreadable or non-mapping file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found")
    try:
        doc = yaml.load(path.read_text(encoding="utf-8"), Loader=_Loader)  # noqa: S506 (safe subclass)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(doc).__name__}")
    return doc


def parse_override(text: str) -> tuple[str, Any]:
    """'run.steps=10' -> ('run.steps', 10); the value is read as YAML (so typed)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. run.steps=10")
    key, _, raw = text.partition("=")
    value = yaml.load(raw, Loader=_Loader) if raw.strip() else None  # noqa: S506
    return key.strip(), value


def apply_overrides(doc: dict[str, Any], overrides: dict[str, Any] | None, source: str) -> dict[str, Any]:
    """Return a copy of `doc` with dotted-key overrides applied ('run.steps': 10)."""
    out = _deepcopy(doc)
    for key, value in (overrides or {}).items():
        parts = key.split(".")
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{source}: override {key!r}: {'.'.join(parts[: i + 1])} is not a section")
            node = child
        node[parts[-1]] = value
    return out


def _deepcopy(doc: Any) -> Any:
    if isinstance(doc, dict):
        return {k: _deepcopy(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [_deepcopy(v) for v in doc]
    return doc


def schema_for(doc: dict[str, Any]) -> type[Section]:
    """The schema class for a raw params mapping, chosen by its top-level keys."""
    for key, target in KINDS.items():
        if key in doc:
            module, _, name = target.partition(":")
            return getattr(importlib.import_module(module), name)
    return TrainParams


def validate(doc: dict[str, Any], source: str, schema: type[Section] | None = None) -> Section:
    """Validate a raw mapping; errors become one ConfigError listing every bad key and value."""
    schema = schema or schema_for(doc)
    try:
        return schema.model_validate(doc)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            value = err.get("input")
            shown = "" if err["type"] == "missing" else f" (got {value!r})" if not isinstance(value, dict) else ""
            lines.append(f"{source}: {key}: {err['msg']}{shown}")
        raise ConfigError("\n".join(lines)) from None


def load(path: str | Path, overrides: dict[str, Any] | None = None, schema: type[Section] | None = None) -> Any:
    """Load and validate a params file, with optional dotted-key overrides."""
    doc = apply_overrides(read_yaml(path), overrides, str(path))
    return validate(doc, str(path), schema)


def to_dict(params: Section) -> dict[str, Any]:
    """The resolved config as plain JSON-able data (what config.json holds)."""
    return params.model_dump(mode="json")
