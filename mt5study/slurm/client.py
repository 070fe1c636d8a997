"""Talking to Slurm: sbatch, squeue and scontrol through their command-line clients.

Every call has a timeout and turns a missing client, a silent slurmctld or a refusal into one
SlurmError that quotes the command and Slurm's own message.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any, Sequence

CLIENT_TIMEOUT_S = 60  # seconds to wait for sbatch/squeue (they retry an unreachable slurmctld)


class SlurmError(RuntimeError):
    """Slurm is not reachable, refused a job, or the job environment lacks what is needed."""


def run_client(argv: Sequence[str], what: str) -> str:
    """Run a Slurm client command and return its stdout; SlurmError says WHAT failed and why."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=CLIENT_TIMEOUT_S)
    except FileNotFoundError:
        raise SlurmError(f"{what}: {argv[0]} not found on PATH (no Slurm client here)") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{what}: `{shlex.join(argv)}` got no answer in {CLIENT_TIMEOUT_S} s (is slurmctld up?)") from None
    if proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip()
        raise SlurmError(f"{what}: `{shlex.join(argv)}` failed with exit code {proc.returncode}: {err}")
    return proc.stdout


def check_slurm() -> None:
    """Raise SlurmError unless sbatch and squeue are installed and slurmctld answers."""
    for tool in ("sbatch", "squeue"):
        if shutil.which(tool) is None:
            raise SlurmError(f"{tool} not found on PATH: no Slurm client on this machine "
                             "(submit from a login node, or start scripts/slurm/start_local_cluster.sh)")
    run_client(["squeue", "--noheader", "--me", "--format=%i"], "contacting slurmctld")


def submit_script(script: str | Path, *, after: str | None = None) -> str:
    """`sbatch --parsable SCRIPT` (after job AFTER ends, when given); returns the job id."""
    argv = ["sbatch", "--parsable", *([f"--dependency=afterany:{after}"] if after else []), str(script)]
    out = run_client(argv, f"submitting {script}")
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch --parsable {script} printed {out.strip()!r}, not a job id")
    return job_id


def record_submission(out: Path, row: dict[str, Any]) -> None:
    """Append one submitted job to OUT/slurm/submissions.jsonl."""
    with open(out / "slurm" / "submissions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def status(out: str | Path | None = None) -> list[dict[str, str]]:
    """Queue rows of this user's jobs (only those submitted to OUT when given)."""
    rows = []
    text = run_client(["squeue", "--noheader", "--me", "--format=%F|%K|%A|%j|%T|%M|%R"], "reading the queue")
    for line in text.splitlines():
        array_id, task, job_id, name, state, elapsed, reason = (line.split("|") + [""] * 7)[:7]
        rows.append({"job_id": array_id, "task": "" if task in ("N/A", "") else task, "id": job_id, "name": name,
                     "state": state, "elapsed": elapsed, "reason": reason})
    if out is not None:
        path = Path(out) / "slurm" / "submissions.jsonl"
        mine = {json.loads(line)["job_id"] for line in path.read_text().splitlines()} if path.exists() else set()
        rows = [r for r in rows if r["job_id"] in mine]
    return rows
