"""The `slurm:` section of a params file: what one job (or each task of an array) asks Slurm for.

A params file carries its own resources, so a run and the allocation it needs travel together:

    slurm:
      nodes: 4
      gpus_per_node: 8
      cpus_per_task: 56
      mem: 480G
      time: "12:00:00"       # quote it: YAML reads 12:00:00 as the number 43200
      partition: batch
      account: abc123
      array_throttle: 2      # at most 2 tasks of an array at once (sbatch --array=...%2)
      signal_seconds: 300    # USR1 to the batch shell 300 s before the time limit
      extra_sbatch: ["--constraint=nvme"]

Every field has a default, so `slurm: {}` (or no section) is a one-node CPU job of one hour.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator, model_validator

from mt5study.sections import Section

_TIME = re.compile(r"^(?:(\d+)-)?(\d{1,3}):([0-5]\d):([0-5]\d)$")  # [D-]HH:MM:SS
_MEM = re.compile(r"^\d+[KMGT]?$")  # Slurm's --mem: a number with unit; no unit = megabytes
_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")  # partition/account/qos/kernel names


def time_limit_seconds(text: str) -> int:
    """'1-02:03:04' or '02:03:04' -> seconds."""
    m = _TIME.match(text)
    if not m:
        raise ValueError(f"time {text!r}: expected HH:MM:SS or D-HH:MM:SS")
    days, h, mi, s = (int(g) if g else 0 for g in m.groups())
    return ((days * 24 + h) * 60 + mi) * 60 + s


class SlurmConfig(Section):
    """Resources and behaviour of the Slurm job that runs one params file."""

    nodes: int = Field(default=1, gt=0)
    """Nodes per job; more than one needs mt5study.slurm.multinode_launch_command inside."""
    gpus_per_node: int = Field(default=0, ge=0)
    """GPUs per node (sbatch --gpus-per-node); 0 = none asked for."""
    cpus_per_task: int = Field(default=1, gt=0)
    """CPU cores per node: one task per node runs the launcher and all its ranks."""
    mem: str | None = None
    """Memory per node, e.g. "32G" (sbatch --mem; no unit = MB); None = the partition's default."""
    time: str = "01:00:00"
    """Time limit, "HH:MM:SS" or "D-HH:MM:SS" (quoted in YAML)."""
    partition: str | None = None
    """None = the cluster's default partition."""
    account: str | None = None
    qos: str | None = None
    array_throttle: int | None = Field(default=None, gt=0)
    """Most tasks of an array running at once (the %N of --array); None = no limit."""
    signal_seconds: int = Field(default=120, gt=0, le=65535)
    """Seconds before the time limit that Slurm sends USR1 to the batch shell (Slurm may send
    it up to 60 s early: its timer runs once a minute)."""
    requeue: bool = True
    """Let the job be requeued: by the batch script after a preemption checkpoint, by Slurm
    after a node failure."""
    kernel: str = "python3"
    """Jupyter kernel papermill runs notebooks with."""
    python: str | None = None
    """Interpreter (of the project's venv) that runs papermill; None = the submitting one."""
    extra_sbatch: list[str] = Field(default_factory=list)
    """Further sbatch options, one per item, e.g. "--constraint=a100" or "--exclusive"."""

    @field_validator("time", "mem", mode="before")
    @classmethod
    def _quoted(cls, value: Any, info: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            hint = "12:00:00" if info.field_name == "time" else "32G"
            raise ValueError(f"got the number {value}; write a quoted string such as \"{hint}\" "
                             "(YAML reads unquoted H:MM:SS as a number of seconds)")
        return value

    @field_validator("time")
    @classmethod
    def _time(cls, value: str) -> str:
        time_limit_seconds(value)
        return value

    @field_validator("mem")
    @classmethod
    def _mem(cls, value: str | None) -> str | None:
        if value is not None and not _MEM.match(value):
            raise ValueError(f"mem {value!r}: expected a number with an optional unit K, M, G or T, e.g. \"32G\"")
        return value

    @field_validator("partition", "account", "qos", "kernel")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r}: letters, digits, '_', '.' and '-' only")
        return value

    @field_validator("extra_sbatch")
    @classmethod
    def _extra(cls, lines: list[str]) -> list[str]:
        for line in lines:
            if not line.startswith("-") or "\n" in line or "\r" in line:
                raise ValueError(f"extra_sbatch item {line!r}: one sbatch option per item, starting with '-'")
        return lines

    @model_validator(mode="after")
    def _signal_before_end(self) -> "SlurmConfig":
        limit = time_limit_seconds(self.time)
        if self.signal_seconds >= limit:
            raise ValueError(f"signal_seconds={self.signal_seconds} is not shorter than the time limit "
                             f"{self.time} ({limit} s): the job would be signalled at its start")
        return self

    @property
    def time_seconds(self) -> int:
        """The time limit in seconds."""
        return time_limit_seconds(self.time)
