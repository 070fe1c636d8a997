"""Job scripts: the sbatch text of a notebook job, an array over a manifest, or any command.

Every script is a header of `#SBATCH` options (from the params' `slurm:` section), a few lines
that set what it runs (PY, CMD, RESUME, OUT_DIR, GRACE, REQUEUE), then the same runner: restart
count, USR1/TERM forwarded to every process below it, requeue after a preemption checkpoint.
The script written under `OUT/slurm/` is exactly what ran (see mt5study.slurm for the contract).
"""

from __future__ import annotations

import re
import shlex
import sys
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from mt5study.config import ConfigError
from mt5study.paths import ROOT
from mt5study.slurm_config import SlurmConfig

# The same in every job; the lines before it set PY, CMD, RESUME, OUT_DIR, GRACE and REQUEUE.
_RUNNER = r"""
# ---- runner (mt5study.slurm): restart count, preemption signals, requeue ----
export PATH="$(dirname "$PY"):$PATH"
RESTARTS=${SLURM_RESTART_COUNT:-0}
log() { echo "[mt5study.slurm $(date +%FT%T)] $*"; }
log "start: job ${SLURM_JOB_ID:-none} array ${SLURM_ARRAY_JOB_ID:-none} task ${SLURM_ARRAY_TASK_ID:-none} on $(hostname) restart_count=$RESTARTS"
if (( RESTARTS > 0 )); then CMD+=("${RESUME[@]}"); export MT5STUDY_RESUME=1; fi
log "command: ${CMD[*]}"
STAMP=$(mktemp)  # summary.json files newer than this were written by this run
trap 'rm -f "$STAMP"' EXIT

# descendants PID: all processes below PID, from one pass over /proc (parent links survive the
# new sessions that jupyter_client and torch elastic start, process groups do not).
descendants() {
  local -A kids=()
  local f s pid ppid out=""
  for f in /proc/[0-9]*/stat; do
    { read -r s <"$f"; } 2>/dev/null || continue  # read: no fork per process
    pid=${s%% *}; s=${s##*") "}; ppid=${s#* }; ppid=${ppid%% *}
    kids[$ppid]+="$pid "
  done
  local -a todo=("$1")
  while (( ${#todo[@]} )); do
    pid=${todo[0]}; todo=("${todo[@]:1}")
    for s in ${kids[$pid]:-}; do out+="$s "; todo+=("$s"); done
  done
  echo "$out"
}
alive() { local s; { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1; s=${s##*") "}; [[ ${s:0:1} != Z ]]; }

CHILD=0; SIGNALLED=""; INTERRUPTED=0; TREE=""
forward() {
  INTERRUPTED=1
  [[ -n $SIGNALLED ]] || SIGNALLED=$1
  log "got SIG$1: forwarding it to the command's processes"
  (( CHILD > 0 )) || return 0
  TREE="$CHILD $(descendants "$CHILD")"
  local p comm
  for p in $TREE; do
    { read -r comm <"/proc/$p/comm"; } 2>/dev/null || continue
    # srun answers TERM by killing its step; Slurm signals steps itself when a job ends.
    [[ $1 == TERM && $comm == srun ]] && continue
    kill -s "$1" "$p" 2>/dev/null || true
  done
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

(trap '' USR1; exec "${CMD[@]}") &
CHILD=$!
[[ -n $SIGNALLED ]] && forward "$SIGNALLED"  # a signal that came before the child existed
while :; do
  INTERRUPTED=0
  wait "$CHILD"; RC=$?
  if (( INTERRUPTED )); then  # wait was cut short by a trap, or the trap came just after it
    alive "$CHILD" && continue
    wait "$CHILD" 2>/dev/null; rc2=$?; (( rc2 != 127 )) && RC=$rc2
  fi
  break
done
log "command exited with code $RC"

if [[ -n $SIGNALLED ]]; then  # ranks may outlive papermill: give them time to finish the checkpoint
  deadline=$(( SECONDS + GRACE ))
  for p in $TREE; do while alive "$p" && (( SECONDS < deadline )); do sleep 1; done; done
fi
PREEMPTED=0
if (( RC == 3 )); then
  PREEMPTED=1
elif [[ -n $OUT_DIR && -d $OUT_DIR ]] && find "$OUT_DIR" -name summary.json -newer "$STAMP" \
    -exec grep -lE '"status": *"preempted"' {} + 2>/dev/null | grep -q .; then
  PREEMPTED=1
fi
(( PREEMPTED )) || exit "$RC"
if [[ $SIGNALLED == TERM ]]; then
  log "stopped for SIGTERM (time limit, scancel or Slurm preemption): Slurm decides about a requeue"
  exit 3
fi
if (( ! REQUEUE )); then
  log "preempted; not requeued (slurm.requeue is false)"
  exit 3
fi
log "preempted: requeueing job $SLURM_JOB_ID; restart $(( RESTARTS + 1 )) resumes from the checkpoint"
trap - TERM
scontrol requeue "$SLURM_JOB_ID" && exit 0
log "scontrol requeue $SLURM_JOB_ID failed"
exit 3
"""


def quote(value: Any) -> str:
    """One shell word."""
    return shlex.quote(str(value))


def _plain_path(path: Path, what: str) -> str:
    # sbatch splits #SBATCH lines on white space: refuse paths that would be cut.
    text = str(path)
    if re.search(r"\s", text):
        raise ConfigError(f"{what} {text!r}: paths with spaces cannot go into #SBATCH lines")
    return text


def sbatch_options(cfg: SlurmConfig, *, job_name: str, log: Path, workdir: Path, array: str | None = None) -> list[str]:
    """The sbatch options of one job script, in the order they are written."""
    opts = [
        f"--job-name={job_name}",
        f"--output={_plain_path(log, 'log')}",
        "--open-mode=append",  # a requeued run appends to the same log
        f"--chdir={_plain_path(workdir, 'workdir')}",
        f"--nodes={cfg.nodes}",
        "--ntasks-per-node=1",  # one launcher per node; it starts the node's ranks
        f"--cpus-per-task={cfg.cpus_per_task}",
        f"--time={cfg.time}",
    ]
    if cfg.mem is not None:
        opts.append(f"--mem={cfg.mem}")
    if cfg.gpus_per_node:
        opts.append(f"--gpus-per-node={cfg.gpus_per_node}")
    for key in ("partition", "account", "qos"):
        if getattr(cfg, key) is not None:
            opts.append(f"--{key}={getattr(cfg, key)}")
    opts.append(f"--signal=B:USR1@{cfg.signal_seconds}")  # B: the batch shell only; it forwards
    opts.append("--requeue" if cfg.requeue else "--no-requeue")
    if array is not None:
        opts.append(f"--array={array}")
    return opts + list(cfg.extra_sbatch)


def array_spec(n_tasks: int, throttle: int | None) -> str:
    """'0-(n-1)' with '%throttle' when given: task i runs line i of the manifest."""
    if n_tasks < 1:
        raise ConfigError("an array needs at least one params file")
    return f"0-{n_tasks - 1}" + (f"%{throttle}" if throttle else "")


def job_script(cfg: SlurmConfig, *, what: str, job_name: str, log: Path, workdir: Path, python: str,
               body: list[str], array: str | None = None) -> str:
    """Header, the lines that set what runs (BODY), then the shared runner."""
    grace = max(cfg.signal_seconds - 10, 5)  # s to wait for ranks to checkpoint after a signal
    lines = ["#!/bin/bash", f"# {what}", f"# written by mt5study.slurm on {datetime.now().isoformat(timespec='seconds')}"]
    lines += [f"#SBATCH {o}" for o in sbatch_options(cfg, job_name=job_name, log=log, workdir=workdir, array=array)]
    lines += ["", "# ---- what this job runs ----", f"PY={quote(python)}", f"GRACE={grace}",
              f"REQUEUE={int(cfg.requeue)}", *body]
    return "\n".join(lines) + "\n" + _RUNNER


def _notebook_body(notebook: Path, out: Path, kernel: str) -> list[str]:
    return [
        f"OUT_ROOT={quote(out)}",
        f"NOTEBOOK={quote(notebook)}",
        'NAME=$(basename "$PARAMS"); NAME=${NAME%.*}',
        'OUT_DIR=$OUT_ROOT/$NAME',  # = task_dir(out, params) on the Python side
        'mkdir -p "$OUT_DIR"',
        f'CMD=("$PY" -m papermill "$NOTEBOOK" "$OUT_DIR/$(basename "$NOTEBOOK")" -k {quote(kernel)} '
        '--log-output --no-progress-bar -p params_path "$PARAMS" -p out_dir "$OUT_DIR")',
        "RESUME=(-p resume True)",
    ]


def task_dir(out: str | Path, params_path: str | Path) -> Path:
    """The out_dir a job gives the notebook for one params file: OUT/<params stem>."""
    return Path(out) / Path(params_path).stem


def python_for(cfg: SlurmConfig) -> str:
    """The interpreter a job runs: the params' `slurm.python`, else this one."""
    return cfg.python or sys.executable


def render_job(notebook: str | Path, params_path: str | Path, out: str | Path, cfg: SlurmConfig,
               *, job_name: str | None = None, workdir: str | Path = ROOT) -> str:
    """The sbatch script that runs NOTEBOOK with one params file through papermill."""
    params_path, out = Path(params_path).resolve(), Path(out).resolve()
    job_name = job_name or f"mt5-{params_path.stem}"
    body = [f"PARAMS={quote(params_path)}", *_notebook_body(Path(notebook).resolve(), out, cfg.kernel)]
    return job_script(cfg, what=f"papermill {Path(notebook).name} with {params_path.name}", job_name=job_name,
                   log=out / "slurm" / "logs" / "%x_%j.log", workdir=Path(workdir), python=python_for(cfg), body=body)


def render_array(notebook: str | Path, manifest: str | Path, n_tasks: int, out: str | Path, cfg: SlurmConfig,
                 *, job_name: str | None = None, workdir: str | Path = ROOT) -> str:
    """The sbatch script of an array: task i runs NOTEBOOK with line i of MANIFEST."""
    notebook, manifest, out = Path(notebook).resolve(), Path(manifest).resolve(), Path(out).resolve()
    body = [
        f"MANIFEST={quote(manifest)}",
        'mapfile -t ALL_PARAMS < "$MANIFEST"',
        'PARAMS=${ALL_PARAMS[${SLURM_ARRAY_TASK_ID:-0}]:-}',
        '[[ -n $PARAMS ]] || { echo "no line ${SLURM_ARRAY_TASK_ID:-0} in $MANIFEST" >&2; exit 2; }',
        *_notebook_body(notebook, out, cfg.kernel),
    ]
    return job_script(cfg, what=f"papermill {notebook.name} over {n_tasks} params files in {manifest.name}",
                   job_name=job_name or f"mt5-{notebook.stem}", log=out / "slurm" / "logs" / "%x_%A_%a.log",
                   workdir=Path(workdir), python=python_for(cfg), body=body,
                   array=array_spec(n_tasks, cfg.array_throttle))


def render_command(argv: Sequence[str], cfg: SlurmConfig, *, job_name: str, log: str | Path,
                   workdir: str | Path = ROOT, resume_args: Sequence[str] = ("--resume",),
                   watch_dir: str | Path | None = None) -> str:
    """The sbatch script for any command (a train CLI, an srun step): same signals and requeue."""
    body = [
        f"OUT_DIR={quote(watch_dir) if watch_dir else ''}",
        "CMD=(" + " ".join(quote(a) for a in argv) + ")",
        "RESUME=(" + " ".join(quote(a) for a in resume_args) + ")",
    ]
    return job_script(cfg, what=f"command {Path(argv[0]).name}", job_name=job_name, log=Path(log),
                   workdir=Path(workdir), python=python_for(cfg), body=body)
