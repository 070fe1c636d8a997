r"""Slurm: one job per params file (or one array over many), preemption-safe, multi-node launch.

Why sbatch scripts and not submitit: submitit pickles a Python callable and runs it in a job.
Here the unit of work is a shell command, `papermill NOTEBOOK OUT.ipynb -p params_path FILE
-p out_dir DIR`, and what matters is in sbatch's own options: `--signal=B:USR1@N`,
`--requeue`, `--array=0-K%N` over a manifest. A plain script template keeps all of that
visible: the script written under `OUT/slurm/` is exactly what ran, can be read, diffed and
resubmitted by hand, and needs nothing but bash and the venv on the compute node.

The package, by role (each module imports only those above it in this list):
    client     sbatch / squeue / scontrol calls, SlurmError
    render     the job scripts: #SBATCH options and the runner (signals, requeue)
    submit     notebooks as jobs or arrays, every params file validated first (submissions.jsonl)
    multinode  inside an allocation: hosts, rendezvous, srun + one `accelerate launch` per node
    cli        `mt5study slurm ...` (mt5study.studies.cluster adds the study arrays)

Preemption contract (the trainer's side is in mt5study's trainer): Slurm sends USR1 to the
batch shell `signal_seconds` before the time limit (or `scancel --signal=USR1 --batch ID`).
The script runs the command with USR1 ignored, so papermill, the kernel and accelerate's
launcher carry on, and forwards USR1 to every process below it (they sit in several sessions,
so a process group would miss some). The trainer, which installs a handler, finishes its step,
checkpoints and writes summary.json with status "preempted" (`mt5study launch` then exits 3).
When the command exits 3, or a summary.json under the run's out_dir newer than the job's start
says "preempted" (a notebook's papermill exits 0 or 1, not 3), the script runs
`scontrol requeue $SLURM_JOB_ID`. The rerun (SLURM_RESTART_COUNT >= 1, logged) gets
`-p resume True` (notebooks) or `--resume` (commands), and MT5STUDY_RESUME=1 in its
environment. SIGTERM (time limit, scancel) is forwarded too but never requeues from the
script: Slurm owns that decision.
"""

from __future__ import annotations

from typing import Any, Sequence

from mt5study.launch import EXIT_PREEMPTED as PREEMPTED_EXIT
from mt5study.paths import ROOT
from mt5study.slurm.client import CLIENT_TIMEOUT_S, SlurmError, check_slurm, run_client, status, submit_script
from mt5study.slurm.multinode import (
    NODE_RANK, LaunchEnv, check_allocation, expand_hostlist, launch_env, multinode_launch_command,
    multinode_train_command, srun_command,
)
from mt5study.slurm.render import (
    array_spec, job_script, python_for, quote, render_array, render_command, render_job, sbatch_options, task_dir,
)
from mt5study.slurm.submit import check_node_count, load_resources, slurm_section, submit
from mt5study.slurm_config import SlurmConfig

__all__ = [
    "SlurmConfig", "SlurmError", "PREEMPTED_EXIT", "NODE_RANK", "CLIENT_TIMEOUT_S", "ROOT", "LaunchEnv",
    "render_job", "render_array", "render_command", "job_script", "sbatch_options", "array_spec", "task_dir",
    "python_for", "quote", "submit", "submit_script", "check_slurm", "run_client", "status", "slurm_section",
    "load_resources", "check_node_count", "launch_env", "check_allocation", "expand_hostlist", "srun_command",
    "multinode_launch_command", "multinode_train_command", "add_cli", "main",
]


def add_cli(subparsers: Any) -> Any:
    """Add `slurm submit|submit-study|train|status` to a CLI's subparsers (mt5study.cli calls it)."""
    from mt5study.slurm import cli  # the command line sits on top of the rest: imported on use

    return cli.add_cli(subparsers)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mt5study.slurm ...`."""
    from mt5study.slurm import cli

    return cli.main(argv)
