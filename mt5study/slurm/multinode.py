r"""Multi-node launch inside an allocation: one `accelerate launch` per node under srun.

E.g. 4 nodes x 8 GPUs: the params say `run: {nodes: 4, processes_per_node: 8}` and
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
(torchrun per node: "standard", not DeepSpeed's pdsh). An allocation that does not match the
params (node count, node list, ranks per node) is refused before anything starts: `check_allocation`.
srun forwards the batch shell's USR1 to every node.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from mt5study.launch import accelerate_command
from mt5study.slurm.client import SlurmError, run_client

NODE_RANK = "$SLURM_NODEID"  # an argv item left for each node's shell to expand (its node index)
PORT_BASE, PORT_SPAN = 20000, 20000  # rendezvous port = PORT_BASE + job id % PORT_SPAN


@dataclass(frozen=True)
class LaunchEnv:
    """Where a job's processes run, read from its Slurm allocation."""

    job_id: int
    hosts: tuple[str, ...]
    gpus_per_node: int  # processes (ranks) per node
    main_ip: str  # machine rank 0's host: the rendezvous runs there
    main_port: int
    nodelist: str = ""  # SLURM_JOB_NODELIST as Slurm wrote it, for messages

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
            return run_client(["scontrol", "show", "hostnames", nodelist], "expanding SLURM_JOB_NODELIST").split()
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
    nnodes = env.get("SLURM_NNODES", str(len(hosts)))
    if not nnodes.isdigit() or int(nnodes) != len(hosts):
        raise SlurmError(f"SLURM_NNODES={nnodes} but SLURM_JOB_NODELIST={nodelist} names {len(hosts)} hosts")
    if len(set(hosts)) != len(hosts):
        raise SlurmError(f"SLURM_JOB_NODELIST={nodelist} names a host twice: {list(hosts)}")
    on_node = env.get("SLURM_GPUS_ON_NODE", "")
    gpus = int(on_node) if on_node.isdigit() and int(on_node) > 0 else (gpus_per_node or 1)
    return LaunchEnv(job_id=job_id, hosts=hosts, gpus_per_node=gpus, main_ip=hosts[0],
                     main_port=PORT_BASE + job_id % PORT_SPAN, nodelist=nodelist)


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


def check_allocation(params: Any, env: LaunchEnv, source: str | Path) -> None:
    """Refuse an allocation that does not match the params: nodes, then ranks per node."""
    run, section = params.run, getattr(params, "slurm", None)
    where = f"the job's node list SLURM_JOB_NODELIST={env.nodelist or ','.join(env.hosts)} ({env.num_machines} node(s))"
    if run.nodes != env.num_machines:
        raise SlurmError(f"{source}: run.nodes={run.nodes} but the job has {env.num_machines} nodes: {where}; "
                         f"submit with --nodes={run.nodes} (slurm.nodes) or change run.nodes")
    if section is not None and section.nodes != env.num_machines:
        raise SlurmError(f"{source}: slurm.nodes={section.nodes} but the job has {env.num_machines} nodes: {where}")
    if run.processes_per_node != env.gpus_per_node:
        raise SlurmError(f"{source}: run.processes_per_node={run.processes_per_node} but the allocation has "
                         f"{env.gpus_per_node} GPU(s) per node (SLURM_GPUS_ON_NODE)")


def multinode_train_command(params: Any, params_path: str | Path, out_dir: str | Path, *, resume: bool = False,
                            environ: Mapping[str, str] | None = None) -> list[str]:
    """The srun command that trains PARAMS on every node of the current allocation (checked first)."""
    env = launch_env(environ, gpus_per_node=params.run.processes_per_node)
    check_allocation(params, env, params_path)
    cmd = accelerate_command(params, params_path, out_dir, num_machines=env.num_machines, machine_rank=NODE_RANK,
                             main_ip=env.main_ip, main_port=env.main_port, extra_args=["--resume"] if resume else [])
    cpus = (os.environ if environ is None else environ).get("SLURM_CPUS_PER_TASK", "")
    return multinode_launch_command(cmd, env, cpus_per_task=int(cpus) if cpus.isdigit() else None)
