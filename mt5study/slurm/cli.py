"""`mt5study slurm submit | submit-study | train | status`: the command line of mt5study.slurm.

Config and Slurm errors print one message and exit 2, before anything is written or submitted.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any, Sequence

from mt5study import config
from mt5study.config import ConfigError
from mt5study.launch import exit_code, launch_env as process_env
from mt5study.slurm.client import SlurmError, status
from mt5study.slurm.multinode import multinode_train_command
from mt5study.slurm.submit import submit

DESCRIPTION = "Submit notebooks and studies to Slurm, train on every node of an allocation, see the queue."


def _fill(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="slurm_command", required=True)
    s = sub.add_parser("submit", help="validate params files, write job scripts, sbatch them")
    s.add_argument("--notebook", required=True, help="notebook papermill runs in each job")
    s.add_argument("--params", nargs="+", required=True, metavar="FILE", help="params files: one job each")
    s.add_argument("--array", action="store_true", help="one job array over the files instead")
    s.add_argument("--out", help="study output folder (default outputs/<notebook name>)")
    s.add_argument("--dry-run", action="store_true", help="print the script(s), submit nothing")
    s.set_defaults(func=_cmd_submit)
    ss = sub.add_parser("submit-study", help="a study's trials as a job array, then its notebook")
    ss.add_argument("--params", required=True, help="study params file")
    ss.add_argument("--notebook", help="study notebook to execute after the trials (papermill)")
    ss.add_argument("--out", help="study folder (default outputs/<study name>)")
    ss.add_argument("--dry-run", action="store_true", help="print the scripts, submit nothing")
    ss.set_defaults(func=_cmd_submit_study)
    tr = sub.add_parser("train", help="inside an allocation: train on every node of it (srun + accelerate)")
    tr.add_argument("--params", required=True, help="training params file")
    tr.add_argument("--out", required=True, help="run folder")
    tr.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    tr.add_argument("--dry-run", action="store_true", help="print the srun command only")
    tr.set_defaults(func=_cmd_train)
    st = sub.add_parser("status", help="this user's queued and running jobs")
    st.add_argument("--out", help="only jobs submitted to this output folder")
    st.set_defaults(func=_cmd_status)


def _reported(fn: Any) -> Any:
    # Config and Slurm errors become one message and exit code 2, whichever CLI calls func.
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except (ConfigError, SlurmError) as e:
            print(f"mt5study slurm {args.slurm_command}: {e}", file=sys.stderr)
            return 2
    return run


@_reported
def _cmd_submit(args: argparse.Namespace) -> int:
    submit(args.notebook, args.params, args.out, array=args.array, dry_run=args.dry_run)
    return 0


@_reported
def _cmd_submit_study(args: argparse.Namespace) -> int:
    from mt5study.studies.cluster import submit_study  # here, not at the top: it pulls in pandas

    submit_study(args.params, args.notebook, args.out, dry_run=args.dry_run)
    return 0


@_reported
def _cmd_train(args: argparse.Namespace) -> int:
    params = config.load(args.params)
    cmd = multinode_train_command(params, Path(args.params).resolve(), Path(args.out).resolve(), resume=args.resume)
    print(shlex.join(cmd), flush=True)
    if args.dry_run:
        return 0
    # srun passes USR1/TERM on to every node's step; the launchers there ignore USR1 (see
    # srun_command) and the ranks checkpoint. Exit 3 tells the job script to requeue.
    return exit_code(args.out, subprocess.call(cmd, env=process_env(params.run.processes_per_node)))


@_reported
def _cmd_status(args: argparse.Namespace) -> int:
    rows = status(args.out)
    print(f"{'JOB':>10} {'TASK':>5} {'NAME':<24} {'STATE':<12} {'ELAPSED':>10}  REASON")
    for r in rows:
        print(f"{r['job_id']:>10} {r['task']:>5} {r['name']:<24} {r['state']:<12} {r['elapsed']:>10}  {r['reason']}")
    if not rows:
        print("no jobs in the queue" + (f" from {args.out}" if args.out else ""))
    return 0


def add_cli(subparsers: Any) -> argparse.ArgumentParser:
    """Add `slurm submit|submit-study|train|status` to a CLI's subparsers; `args.func(args)` runs one."""
    parser = subparsers.add_parser("slurm", help="submit notebooks to Slurm, see their jobs")
    _fill(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mt5study.slurm submit|submit-study|train|status ...`."""
    parser = argparse.ArgumentParser(prog="mt5study slurm", description=DESCRIPTION)
    _fill(parser)
    args = parser.parse_args(argv)
    return args.func(args)
