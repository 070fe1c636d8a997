r"""Slurm: one job per params file (or one array over many), preemption-safe, multi-node launch.

Why sbatch scripts and not submitit: submitit pickles a Python callable and runs it in a job.
Here the unit of work is a shell command, `papermill NOTEBOOK OUT.ipynb -p params_path FILE
-p out_dir DIR`, and what matters is in sbatch's own options: `--signal=B:USR1@N`,
`--requeue`, `--array=0-K%N` over a manifest. A plain script template keeps all of that
visible: the script written under `OUT/slurm/` is exactly what ran, can be read, diffed and
resubmitted by hand, and needs nothing but bash and the venv on the compute node.

Layout of a submission to OUT (default outputs/<notebook name>):

    OUT/<params stem>/<notebook>.ipynb      executed notebook; the notebook's out_dir is OUT/<params stem>
    OUT/slurm/<job>_<time>.sbatch           the job script (and .manifest: one params path a line)
    OUT/slurm/logs/<job>_<id>.log           one log per job, <job>_<array id>_<task>.log per task
    OUT/slurm/submissions.jsonl             one line per submitted job: id, script, params

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

Multi-node, e.g. 4 nodes x 8 GPUs: the params say `run: {nodes: 4, processes_per_node: 8}` and
`slurm: {nodes: 4, gpus_per_node: 8, cpus_per_task: 64}`. Inside the job (job id 1234, nodes
gpu[001-004]), `multinode_train_command(params, path, out)` reads the allocation with
`launch_env()` (hosts gpu001..gpu004 from `scontrol show hostnames`, 8 GPUs each from
SLURM_GPUS_ON_NODE, main address gpu001, port 20000 + 1234 % 20000 = 21234), takes
`mt5study.launch.accelerate_command(...)` and wraps it (`multinode_launch_command`) as

    srun --nodes=4 --ntasks=4 --ntasks-per-node=1 --kill-on-bad-exit=1 --cpus-per-task=64 \
      bash -c "trap '' USR1; exec python -m accelerate.commands.launch --num_machines 4 \
        --machine_rank \"$SLURM_NODEID\" --num_processes 32 --main_process_ip gpu001 \
        --main_process_port 21234 --deepspeed_multinode_launcher standard --use_deepspeed ... \
        -m mt5study.cli train --params PATH --out OUT"

one accelerate launcher per node, machine rank from each node's own SLURM_NODEID, 8 ranks each
(torchrun per node: "standard", not DeepSpeed's pdsh). A params world size that differs from
the allocation's nodes x GPUs is refused. srun forwards the batch shell's USR1 to every node.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

from mt5study import config
from mt5study.config import ConfigError
from mt5study.paths import OUTPUTS, ROOT
from mt5study.records import write_text_atomic
from mt5study.slurm_config import SlurmConfig

__all__ = [
    "SlurmConfig", "SlurmError", "PREEMPTED_EXIT", "NODE_RANK", "LaunchEnv", "render_job",
    "render_array", "render_command", "submit", "submit_script", "check_slurm", "launch_env",
    "expand_hostlist", "srun_command", "multinode_launch_command", "multinode_train_command", "add_cli", "main",
]

PREEMPTED_EXIT = 3  # the trainer's exit code after a preemption checkpoint
NODE_RANK = "$SLURM_NODEID"  # an argv item left for each node's shell to expand (its node index)
PORT_BASE, PORT_SPAN = 20000, 20000  # rendezvous port = PORT_BASE + job id % PORT_SPAN
CLIENT_TIMEOUT_S = 60  # seconds to wait for sbatch/squeue (they retry an unreachable slurmctld)


class SlurmError(RuntimeError):
    """Slurm is not reachable, refused a job, or the job environment lacks what is needed."""


# --------------------------------------------------------------------------- job scripts

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


def _q(value: Any) -> str:
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


def _script(cfg: SlurmConfig, *, what: str, job_name: str, log: Path, workdir: Path, python: str,
            body: list[str], array: str | None = None) -> str:
    grace = max(cfg.signal_seconds - 10, 5)  # s to wait for ranks to checkpoint after a signal
    lines = ["#!/bin/bash", f"# {what}", f"# written by mt5study.slurm on {datetime.now().isoformat(timespec='seconds')}"]
    lines += [f"#SBATCH {o}" for o in sbatch_options(cfg, job_name=job_name, log=log, workdir=workdir, array=array)]
    lines += ["", "# ---- what this job runs ----", f"PY={_q(python)}", f"GRACE={grace}",
              f"REQUEUE={int(cfg.requeue)}", *body]
    return "\n".join(lines) + "\n" + _RUNNER


def _notebook_body(notebook: Path, out: Path, kernel: str) -> list[str]:
    return [
        f"OUT_ROOT={_q(out)}",
        f"NOTEBOOK={_q(notebook)}",
        'NAME=$(basename "$PARAMS"); NAME=${NAME%.*}',
        'OUT_DIR=$OUT_ROOT/$NAME',  # = task_dir(out, params) on the Python side
        'mkdir -p "$OUT_DIR"',
        f'CMD=("$PY" -m papermill "$NOTEBOOK" "$OUT_DIR/$(basename "$NOTEBOOK")" -k {_q(kernel)} '
        '--log-output --no-progress-bar -p params_path "$PARAMS" -p out_dir "$OUT_DIR")',
        "RESUME=(-p resume True)",
    ]


def task_dir(out: str | Path, params_path: str | Path) -> Path:
    """The out_dir a job gives the notebook for one params file: OUT/<params stem>."""
    return Path(out) / Path(params_path).stem


def _python(cfg: SlurmConfig) -> str:
    return cfg.python or sys.executable


def render_job(notebook: str | Path, params_path: str | Path, out: str | Path, cfg: SlurmConfig,
               *, job_name: str | None = None, workdir: str | Path = ROOT) -> str:
    """The sbatch script that runs NOTEBOOK with one params file through papermill."""
    params_path, out = Path(params_path).resolve(), Path(out).resolve()
    job_name = job_name or f"mt5-{params_path.stem}"
    body = [f"PARAMS={_q(params_path)}", *_notebook_body(Path(notebook).resolve(), out, cfg.kernel)]
    return _script(cfg, what=f"papermill {Path(notebook).name} with {params_path.name}", job_name=job_name,
                   log=out / "slurm" / "logs" / "%x_%j.log", workdir=Path(workdir), python=_python(cfg), body=body)


def render_array(notebook: str | Path, manifest: str | Path, n_tasks: int, out: str | Path, cfg: SlurmConfig,
                 *, job_name: str | None = None, workdir: str | Path = ROOT) -> str:
    """The sbatch script of an array: task i runs NOTEBOOK with line i of MANIFEST."""
    notebook, manifest, out = Path(notebook).resolve(), Path(manifest).resolve(), Path(out).resolve()
    body = [
        f"MANIFEST={_q(manifest)}",
        'mapfile -t ALL_PARAMS < "$MANIFEST"',
        'PARAMS=${ALL_PARAMS[${SLURM_ARRAY_TASK_ID:-0}]:-}',
        '[[ -n $PARAMS ]] || { echo "no line ${SLURM_ARRAY_TASK_ID:-0} in $MANIFEST" >&2; exit 2; }',
        *_notebook_body(notebook, out, cfg.kernel),
    ]
    return _script(cfg, what=f"papermill {notebook.name} over {n_tasks} params files in {manifest.name}",
                   job_name=job_name or f"mt5-{notebook.stem}", log=out / "slurm" / "logs" / "%x_%A_%a.log",
                   workdir=Path(workdir), python=_python(cfg), body=body,
                   array=array_spec(n_tasks, cfg.array_throttle))


def render_command(argv: Sequence[str], cfg: SlurmConfig, *, job_name: str, log: str | Path,
                   workdir: str | Path = ROOT, resume_args: Sequence[str] = ("--resume",),
                   watch_dir: str | Path | None = None) -> str:
    """The sbatch script for any command (a train CLI, an srun step): same signals and requeue."""
    body = [
        f"OUT_DIR={_q(watch_dir) if watch_dir else ''}",
        "CMD=(" + " ".join(_q(a) for a in argv) + ")",
        "RESUME=(" + " ".join(_q(a) for a in resume_args) + ")",
    ]
    return _script(cfg, what=f"command {Path(argv[0]).name}", job_name=job_name, log=Path(log),
                   workdir=Path(workdir), python=_python(cfg), body=body)


# --------------------------------------------------------------------------- submission

def _run(argv: Sequence[str], what: str) -> str:
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
    _run(["squeue", "--noheader", "--me", "--format=%i"], "contacting slurmctld")


def submit_script(script: str | Path) -> str:
    """`sbatch --parsable SCRIPT`; returns the job id."""
    out = _run(["sbatch", "--parsable", str(script)], f"submitting {script}")
    job_id = out.strip().split(";")[0]
    if not job_id.isdigit():
        raise SlurmError(f"sbatch --parsable {script} printed {out.strip()!r}, not a job id")
    return job_id


def slurm_section(params: Any) -> SlurmConfig:
    """The params' `slurm:` section, or the defaults when it has none."""
    return getattr(params, "slurm", None) or SlurmConfig()


def load_resources(params_files: Sequence[str | Path]) -> list[SlurmConfig]:
    """Validate every params file (all of them, then raise once) and return their slurm sections."""
    errors, found = [], []
    for path in params_files:
        try:
            found.append(slurm_section(config.load(path)))
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors) + "\nnothing was submitted")
    return found


def submit(notebook: str | Path, params_files: Sequence[str | Path], out: str | Path | None = None, *,
           array: bool = False, dry_run: bool = False, echo: Any = print) -> list[str]:
    """Validate all params, write job script(s) under OUT/slurm and sbatch them; returns job ids."""
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ConfigError(f"{notebook}: notebook not found")
    if not params_files:
        raise ConfigError("no params files given")
    params = [Path(p).resolve() for p in params_files]
    cfgs = load_resources(params)
    stems = [p.stem for p in params]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"params files share a name, so their out_dirs would collide: {sorted(map(str, params))}")
    if array and any(c != cfgs[0] for c in cfgs[1:]):
        raise ConfigError(f"one array asks for one set of resources, but the slurm sections of {[str(p) for p in params]} differ")
    out = Path(out).resolve() if out else (OUTPUTS / notebook.stem).resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    plan: list[tuple[Path, str, list[Path]]] = []  # (script path, script text, params it runs)
    manifest = None
    if array:
        name = f"mt5-{notebook.stem}"
        manifest = out / "slurm" / f"{name}_{stamp}.manifest"
        plan.append((out / "slurm" / f"{name}_{stamp}.sbatch",
                     render_array(notebook, manifest, len(params), out, cfgs[0], job_name=name), params))
    else:
        for path, cfg in zip(params, cfgs):
            plan.append((out / "slurm" / f"mt5-{path.stem}_{stamp}.sbatch", render_job(notebook, path, out, cfg), [path]))
    if dry_run:
        for script, text, _ in plan:
            echo(f"# ---- {script} (not written: dry run)\n{text}")
        if manifest is not None:
            echo(f"# ---- {manifest}\n" + "".join(f"{p}\n" for p in params))
        return []
    check_slurm()
    (out / "slurm" / "logs").mkdir(parents=True, exist_ok=True)  # Slurm does not create log folders
    if manifest is not None:
        write_text_atomic(manifest, "".join(f"{p}\n" for p in params))
    ids: list[str] = []
    for script, text, runs in plan:
        write_text_atomic(script, text)
        try:
            job_id = submit_script(script)
        except SlurmError as e:
            raise SlurmError(f"{e}\nsubmitted before the failure: {ids or 'none'}") from None
        ids.append(job_id)
        _record(out, {"job_id": job_id, "script": str(script), "notebook": str(notebook), "array": array,
                      "params": [str(p) for p in runs], "time": datetime.now().isoformat(timespec="seconds")})
        echo(f"submitted job {job_id}: {script}")
    return ids


def _record(out: Path, row: dict[str, Any]) -> None:
    with open(out / "slurm" / "submissions.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def status(out: str | Path | None = None) -> list[dict[str, str]]:
    """Queue rows of this user's jobs (only those submitted to OUT when given)."""
    rows = []
    text = _run(["squeue", "--noheader", "--me", "--format=%F|%K|%A|%j|%T|%M|%R"], "reading the queue")
    for line in text.splitlines():
        array_id, task, job_id, name, state, elapsed, reason = (line.split("|") + [""] * 7)[:7]
        rows.append({"job_id": array_id, "task": "" if task in ("N/A", "") else task, "id": job_id, "name": name,
                     "state": state, "elapsed": elapsed, "reason": reason})
    if out is not None:
        path = Path(out) / "slurm" / "submissions.jsonl"
        mine = {json.loads(line)["job_id"] for line in path.read_text().splitlines()} if path.exists() else set()
        rows = [r for r in rows if r["job_id"] in mine]
    return rows


# --------------------------------------------------------------------------- multi-node launch

@dataclass(frozen=True)
class LaunchEnv:
    """Where a job's processes run, read from its Slurm allocation."""

    job_id: int
    hosts: tuple[str, ...]
    gpus_per_node: int  # processes (ranks) per node
    main_ip: str  # machine rank 0's host: the rendezvous runs there
    main_port: int

    @property
    def num_machines(self) -> int:
        return len(self.hosts)

    @property
    def num_processes(self) -> int:
        return self.num_machines * self.gpus_per_node


def expand_hostlist(text: str) -> list[str]:
    """'gpu[01-03,07],login1' -> gpu01 gpu02 gpu03 gpu07 login1 (as `scontrol show hostnames`)."""
    items, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [host for item in items if item for host in _expand_item(item)]


def _expand_item(item: str) -> list[str]:
    m = re.search(r"\[([^\]]*)\]", item)
    if not m:
        return [item]
    head, tail, hosts = item[: m.start()], item[m.end():], []
    for part in m.group(1).split(","):
        lo, _, hi = part.partition("-")
        values = [str(i).zfill(len(lo)) for i in range(int(lo), int(hi) + 1)] if hi else [lo]
        for v in values:
            hosts += [head + v + rest for rest in _expand_item(tail)]
    return hosts


def _hostnames(nodelist: str) -> list[str]:
    if shutil.which("scontrol"):
        try:
            return _run(["scontrol", "show", "hostnames", nodelist], "expanding SLURM_JOB_NODELIST").split()
        except SlurmError:
            pass  # scontrol without a slurm.conf: the same grammar, expanded here
    return expand_hostlist(nodelist)


def launch_env(environ: Mapping[str, str] | None = None, *, gpus_per_node: int | None = None) -> LaunchEnv:
    """Hosts, ranks per node and rendezvous address of the current allocation."""
    env = os.environ if environ is None else environ
    if not env.get("SLURM_JOB_ID"):
        raise SlurmError("SLURM_JOB_ID is not set: launch_env() runs inside a Slurm job (sbatch or salloc)")
    job_id = int(env["SLURM_JOB_ID"])
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not nodelist:
        raise SlurmError("SLURM_JOB_NODELIST is not set in this job")
    hosts = tuple(_hostnames(nodelist))
    nnodes = int(env.get("SLURM_NNODES", len(hosts)))
    if nnodes != len(hosts):
        raise SlurmError(f"SLURM_NNODES={nnodes} but SLURM_JOB_NODELIST={nodelist} names {len(hosts)} hosts")
    on_node = env.get("SLURM_GPUS_ON_NODE", "")
    gpus = int(on_node) if on_node.isdigit() and int(on_node) > 0 else (gpus_per_node or 1)
    return LaunchEnv(job_id=job_id, hosts=hosts, gpus_per_node=gpus, main_ip=hosts[0],
                     main_port=PORT_BASE + job_id % PORT_SPAN)


def _shell_word(arg: str) -> str:
    return '"$SLURM_NODEID"' if arg == NODE_RANK else shlex.quote(arg)


def srun_command(inner: Sequence[str], nodes: int, *, cpus_per_task: int | None = None) -> list[str]:
    """srun running INNER once per node, with USR1 ignored by all but processes that handle it."""
    opts = [f"--nodes={nodes}", f"--ntasks={nodes}", "--ntasks-per-node=1", "--kill-on-bad-exit=1"]
    if cpus_per_task:
        opts.append(f"--cpus-per-task={cpus_per_task}")
    return ["srun", *opts, "bash", "-c", "trap '' USR1; exec " + " ".join(_shell_word(a) for a in inner)]


_MACHINE_FLAGS = {"--num_machines", "--machine_rank", "--num_processes", "--main_process_ip",
                  "--main_process_port", "--deepspeed_multinode_launcher"}


def multinode_launch_command(accelerate_argv: Sequence[str], env: LaunchEnv, *,
                             cpus_per_task: int | None = None) -> list[str]:
    """srun + `accelerate launch` with this allocation's machine flags (replacing any given)."""
    argv = list(accelerate_argv)
    at = next((i + 1 for i, a in enumerate(argv)
               if (a == "launch" and i and Path(argv[i - 1]).name == "accelerate") or a == "accelerate.commands.launch"), None)
    if at is None:
        raise ValueError(f"not an accelerate launch command: {shlex.join(argv)}")
    # The launcher's own options end where the script (.py) or module (-m NAME) begins.
    end = next((i for i in range(at, len(argv)) if argv[i] in ("-m", "--module") or argv[i].endswith(".py")), len(argv))
    kept, i = [], at
    while i < end:
        flag, eq, value = argv[i].partition("=")
        if flag in _MACHINE_FLAGS:
            value = value if eq else (argv[i + 1] if i + 1 < end else "")
            if flag == "--num_processes" and value != str(env.num_processes):
                raise SlurmError(f"the command asks for {value} processes but the allocation has {env.num_machines} "
                                 f"nodes x {env.gpus_per_node} = {env.num_processes}: fix run.nodes/processes_per_node "
                                 "or the slurm section")
            i += 1 if eq else 2
            continue
        kept.append(argv[i])
        i += 1
    flags = ["--num_machines", str(env.num_machines), "--machine_rank", NODE_RANK,
             "--num_processes", str(env.num_processes), "--main_process_ip", env.main_ip,
             "--main_process_port", str(env.main_port)]
    if "--use_deepspeed" in kept:
        flags += ["--deepspeed_multinode_launcher", "standard"]  # torchrun per node, not pdsh
    return srun_command([*argv[:at], *flags, *kept, *argv[end:]], env.num_machines, cpus_per_task=cpus_per_task)


def multinode_train_command(params: Any, params_path: str | Path, out_dir: str | Path, *, resume: bool = False,
                            environ: Mapping[str, str] | None = None) -> list[str]:
    """The srun command that trains PARAMS on every node of the current allocation."""
    from mt5study.launch import accelerate_command

    env = launch_env(environ, gpus_per_node=params.run.processes_per_node)
    if params.run.nodes != env.num_machines:
        raise SlurmError(f"{params_path}: run.nodes={params.run.nodes} but the job has {env.num_machines} nodes")
    cmd = accelerate_command(params, params_path, out_dir, num_machines=env.num_machines, machine_rank=NODE_RANK,
                             main_ip=env.main_ip, main_port=env.main_port, extra_args=["--resume"] if resume else [])
    cpus = (os.environ if environ is None else environ).get("SLURM_CPUS_PER_TASK", "")
    return multinode_launch_command(cmd, env, cpus_per_task=int(cpus) if cpus.isdigit() else None)


# --------------------------------------------------------------------------- command line

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
    from mt5study.studies.cluster import submit_study

    submit_study(args.params, args.notebook, args.out, dry_run=args.dry_run)
    return 0


@_reported
def _cmd_train(args: argparse.Namespace) -> int:
    from mt5study.launch import exit_code, launch_env as process_env

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
    """Add `slurm submit` and `slurm status` to a CLI's subparsers; `args.func(args)` runs one."""
    parser = subparsers.add_parser("slurm", help="submit notebooks to Slurm, see their jobs")
    _fill(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mt5study.slurm submit|status ...`."""
    parser = argparse.ArgumentParser(prog="mt5study slurm", description=__doc__.split("\n", 1)[0])
    _fill(parser)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
