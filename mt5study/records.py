"""Run folders: atomic writes, metrics lines and the environment record.

A run folder holds `config.json` (resolved params), `metrics.jsonl` (one line per logged step),
`env.json` (versions, git commit, hardware) and `summary.json`, written last: a folder without
`summary.json` is not a finished run.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from mt5study.paths import ROOT

PACKAGES = (
    "mt5study", "torch", "transformers", "accelerate", "deepspeed", "datasets", "sentencepiece",
    "tokenizers", "numpy", "pandas", "pyarrow", "pydantic", "optuna", "papermill", "py3langid",
)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a part."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Metric lines of a run; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def rewrite_metrics(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace metrics.jsonl atomically (used on resume to drop lines past the checkpoint)."""
    write_text_atomic(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    """The commit of the working tree and whether it has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def hardware() -> dict[str, Any]:
    """CPU model, core count, memory and GPUs of this host."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"host": socket.gethostname(), "cpu": cpu, "cpu_count": os.cpu_count()}
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
        else:
            info["gpus"] = []
        import torch.backends.cpu as tbc

        info["cpu_capability"] = tbc.get_cpu_capability()
    except Exception:  # noqa: BLE001 (env.json must never fail a run)
        pass
    return info


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(**extra: Any) -> dict[str, Any]:
    """What env.json holds: versions, git commit, hardware, time, plus caller's fields."""
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "git": git_commit(),
        "hardware": hardware(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_") and k in _SLURM_KEYS},
        **extra,
    }


_SLURM_KEYS = {
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
    "SLURM_NNODES", "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT",
}
