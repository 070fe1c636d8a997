"""From a validated params file to processes: the DeepSpeed config and the `accelerate launch` call.

`deepspeed_config(params)` turns the typed config into DeepSpeed's JSON (no "auto" values: every
number is resolved here, so the file in the run folder says exactly what ran).
`accelerate_command(...)` builds the launch for one machine of the allocation; `mt5study.slurm`
wraps it in `srun` for several nodes. `run(...)` launches locally and waits (notebooks, studies).

Several nodes on one host: params with `run.nodes: 2` launched here (no allocation, so no
rendezvous host given) start every machine rank on this host, each its own `accelerate launch
--num_machines 2 --machine_rank R --main_process_ip 127.0.0.1 --main_process_port P
--deepspeed_multinode_launcher standard` (torchrun per machine, static rendezvous on rank 0's
port), under `python -m mt5study.launch machines`: the same launchers a cluster runs, on loopback.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from mt5study.config import ConfigError, TrainParams
from mt5study.memory import largest_layer_params, reduce_bucket_elements
from mt5study.model import PRESETS
from mt5study.records import read_json

# Exit codes of `mt5study train` (also read by the Slurm batch script).
EXIT_OK = 0  # completed, diverged or unsupported: a result was recorded
EXIT_FAILED = 1
EXIT_CONFIG = 2
EXIT_PREEMPTED = 3  # checkpointed on a signal; rerun with --resume
EXIT_DIVERGED = 4  # the loss went non-finite (or fp16 kept overflowing): recorded as `diverged`
# A launched rank exits 0 whenever a result was recorded (torchrun counts any other code as a
# crash); the launch as a whole (`mt5study launch`, `trial`, one plain process) exits with the
# recorded status's code (`status_exit_code`).


def deepspeed_config(params: TrainParams) -> dict[str, Any]:
    """DeepSpeed's config for this run: batch arithmetic, ZeRO stage, offload, precision."""
    run, optim = params.run, params.optim
    zero: dict[str, Any] = {"stage": run.zero_stage}
    if run.zero_stage >= 1:
        # The reduce bucket is sized from the model (memory.reduce_bucket_elements), not
        # DeepSpeed's default 5e8 elements, which allocates 1.86 GiB per rank in fp32.
        zero.update(overlap_comm=True, contiguous_gradients=True,
                    reduce_bucket_size=reduce_bucket_elements(params.model.preset))
    if run.zero_stage == 3:
        # Gather the full 16-bit weights on save: without it ZeRO-3 saves empty or partial
        # weights (DeepSpeed #3841, accelerate #3316).
        zero["stage3_gather_16bit_weights_on_model_save"] = True
        # The optimizer step runs per sub-group of this rank's flat partition, and each sub-group
        # costs a flattened copy of its gradients (stage3.py `_prepare_fp32_grad_for_sub_group`)
        # and AdamW's sqrt(v) temporary while it steps. DeepSpeed's default 1e9 elements makes
        # the whole partition one sub-group (+2.2 GiB per rank for mt5-base on 2 ranks); 2**25
        # elements (128 MiB each in fp32) bounds them. Adam is elementwise: same update.
        zero["sub_group_size"] = 2**25
        # Release each module's gathered weights after use: with DeepSpeed's default reuse
        # distance (1e9 elements) a weight used again within that many elements (mT5's shared
        # embedding: encoder, then decoder) stays gathered from step 2 on, once its trace knows
        # the order. mt5-base on 2 CPU ranks peaked 1.9 GiB per rank higher at step 2 than at
        # step 1 with the default. Only when weights are gathered changes, not the numbers.
        zero["stage3_max_reuse_distance"] = 0
        # Prefetching (from step 2, once DeepSpeed has traced the module order) gathers upcoming
        # weights while the current module runs. With DeepSpeed's defaults (bucket 5e7 elements,
        # up to 1e9 live) the 192M-element vocabulary matrices of mt5-base were gathered next to
        # the module in use: +0.98 GiB per rank at step 2 over step 1 on 2 CPU ranks. Sized from
        # the model, the gathered weights stay within one largest module plus one prefetch
        # bucket (Accelerate's "auto" values for the bucket and the persistence threshold).
        d_model = PRESETS[params.model.preset]["d_model"]
        zero["stage3_prefetch_bucket_size"] = int(0.9 * d_model * d_model)  # elements
        zero["stage3_max_live_parameters"] = largest_layer_params(params.model.preset)  # elements
        zero["stage3_param_persistence_threshold"] = 10 * d_model  # smaller weights stay whole (norms)
    if run.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    if run.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    config: dict[str, Any] = {
        "train_batch_size": run.effective_global_batch,
        "train_micro_batch_size_per_gpu": run.micro_batch,
        "gradient_accumulation_steps": run.grad_accum,
        "gradient_clipping": optim.grad_clip,
        "zero_optimization": zero,
        # The optimizer is built in mt5study.train (AdamW or Adafactor) and handed to DeepSpeed;
        # allow it with ZeRO-Offload too instead of forcing DeepSpeedCPUAdam.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,  # mt5study logs; keep DeepSpeed quiet
        "wall_clock_breakdown": False,
        "bf16": {"enabled": run.precision == "bf16"},
        "fp16": {
            "enabled": run.precision == "fp16",
            "loss_scale": 0,  # 0 = dynamic loss scaling
            "initial_scale_power": run.fp16_initial_scale_power,
            "loss_scale_window": 1000,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
    }
    return config


def accelerate_command(
    params: TrainParams,
    params_path: str | Path,
    out_dir: str | Path,
    num_machines: int | None = None,
    machine_rank: int | str = 0,
    main_ip: str | None = None,
    main_port: int | None = None,
    extra_args: Sequence[str] = (),
    python: str | None = None,
) -> list[str]:
    """`accelerate launch` for one machine of the run's allocation (world size from params).

    Several machines and no rendezvous host: the command that runs them all on this host."""
    run = params.run
    num_machines = num_machines or run.nodes
    if num_machines > 1 and main_ip is None:
        return local_machines_command(params, params_path, out_dir, num_machines, extra_args, python)
    cmd = [
        python or sys.executable, "-m", "accelerate.commands.launch",
        "--num_machines", str(num_machines),
        "--num_processes", str(run.world_size),
        "--machine_rank", str(machine_rank),
        "--use_deepspeed",
        "--zero_stage", str(run.zero_stage),
        "--gradient_accumulation_steps", str(run.grad_accum),
        "--mixed_precision", {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[run.precision],
        "--dynamo_backend", "no",
    ]
    if num_machines > 1:
        if not main_ip or not main_port:
            raise ValueError("a multi-machine launch needs main_ip and main_port")
        cmd += ["--deepspeed_multinode_launcher", "standard"]
    if main_ip:
        cmd += ["--main_process_ip", main_ip]
    if main_port:
        cmd += ["--main_process_port", str(main_port)]
    elif num_machines == 1:
        cmd += ["--main_process_port", str(free_port())]
    cmd += ["-m", "mt5study.cli", "train", "--params", str(params_path), "--out", str(out_dir), *extra_args]
    return cmd


def one_process_command(params_path: str | Path, out_dir: str | Path, extra_args: Sequence[str] = (),
                        python: str | None = None) -> list[str]:
    """`python -m mt5study.cli train ...`: a world of one, no launcher (the trainer sets up its group)."""
    return [python or sys.executable, "-m", "mt5study.cli", "train", "--params", str(params_path),
            "--out", str(out_dir), *extra_args]


def uses_launcher(params: TrainParams) -> bool:
    """Whether the run goes through `accelerate launch` (several processes, or asked for)."""
    return params.run.world_size > 1 or params.run.launcher == "accelerate"


# Variables a launcher (torchrun, accelerate, deepspeed) sets for each rank it starts.
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "GROUP_RANK", "ROLE_RANK",
                  "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_RUN_ID")


def launched() -> bool:
    """Whether a launcher started this process (it sets LOCAL_RANK, which Accelerate reads too)."""
    return "LOCAL_RANK" in os.environ


def become_world_of_one() -> None:
    """Set in this process what a launcher would set for a world of one on this host.

    Accelerate and DeepSpeed then initialise a 1-process group (gloo on CPU) from them, and the
    run goes through the same engine as a launched one."""
    env = launch_env(1)
    env.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1", GROUP_RANK="0",
               ROLE_RANK="0", MASTER_ADDR=LOOPBACK, MASTER_PORT=str(free_port()))
    os.environ.update(env)


MACHINE_RANK_SLOT = "@MACHINE_RANK@"  # replaced by 0..N-1 in each local machine's command
LOOPBACK = "127.0.0.1"


def local_machines_command(params: TrainParams, params_path: str | Path, out_dir: str | Path, num_machines: int,
                           extra_args: Sequence[str] = (), python: str | None = None) -> list[str]:
    """`python -m mt5study.launch machines N -- <accelerate launch ...>`: N machine ranks on loopback."""
    nnodes = os.environ.get("SLURM_NNODES", "1")
    if os.environ.get("SLURM_JOB_ID") and nnodes.isdigit() and int(nnodes) > 1:
        # In a real multi-node allocation every machine rank belongs on its own node.
        raise ConfigError(f"run.nodes={num_machines}: this is a {nnodes}-node Slurm allocation "
                          f"(SLURM_JOB_NODELIST={os.environ.get('SLURM_JOB_NODELIST', '?')}); `mt5study slurm train` "
                          "starts one launcher per node, `mt5study launch` would run every machine rank on this one")
    per_machine = accelerate_command(params, params_path, out_dir, num_machines=num_machines,
                                     machine_rank=MACHINE_RANK_SLOT, main_ip=LOOPBACK, main_port=free_port(),
                                     extra_args=extra_args, python=python)
    # Every rank of every machine shares this host's cores: split them over the whole world
    # (launch_env splits over one machine's ranks), unless OMP_NUM_THREADS is set already.
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // params.run.world_size))
    return [python or sys.executable, "-m", "mt5study.launch", "machines", str(num_machines),
            "--omp-threads", threads, "--", *per_machine]


def run_machines(num_machines: int, per_machine: Sequence[str], env: dict[str, str] | None = None,
                 omp_threads: int | None = None, poll_s: float = 0.2) -> int:
    """Start PER_MACHINE once per machine rank on this host; the first failure stops the others.

    Returns 0 when every launcher exits 0, else the first non-zero exit code. SIGTERM to this
    process goes on to every launcher (torchrun passes it to its ranks); SIGUSR1 reaches the
    ranks from whoever sends it to the process tree (call_forwarding_signals), not from here.
    """
    import signal
    import time

    if MACHINE_RANK_SLOT not in per_machine:
        raise ValueError(f"the per-machine command has no {MACHINE_RANK_SLOT} to put the machine rank in")
    env = dict(os.environ if env is None else env)
    if omp_threads:
        env["OMP_NUM_THREADS"] = str(omp_threads)  # torch's intra-op threads per rank
    procs = [subprocess.Popen([str(r) if a == MACHINE_RANK_SLOT else a for a in per_machine], env=env)
             for r in range(num_machines)]

    def stop_all(signum, frame):  # noqa: ARG001
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)

    previous = signal.signal(signal.SIGTERM, stop_all)
    try:
        first_failure = 0
        while [p.poll() for p in procs].count(None):  # poll every one: each updates its returncode
            failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
            if failed and not first_failure:
                first_failure = failed[0]
                stop_all(signal.SIGTERM, None)  # a lone machine would wait for its peers until the timeout
            time.sleep(poll_s)
        return first_failure or next((p.returncode for p in procs if p.returncode), 0)
    finally:
        signal.signal(signal.SIGTERM, previous)


def free_port() -> int:
    """A free TCP port on this host for the rendezvous of a single-machine launch."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_env(processes_per_node: int = 1) -> dict[str, str]:
    """Environment for launched processes: quiet; on CPU the cores shared out between ranks."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if not _has_cuda():
        # DeepSpeed picks its accelerator at import; make the CPU choice explicit, and give each
        # rank its share of the cores so that ranks x threads does not oversubscribe them.
        env.setdefault("DS_ACCELERATOR", "cpu")
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // processes_per_node)))
        # glibc gives each thread that allocates (OpenMP, gloo, DeepSpeed's) its own heap arena,
        # and freed blocks stay in them: two arenas bound that held-back memory per rank.
        env.setdefault("MALLOC_ARENA_MAX", "2")
        # OpenMP threads that wait at a barrier sleep instead of spinning: with other work on the
        # cores, spinning threads wait for a descheduled peer. Measured here (mini, fp32, one
        # process, 2 threads, load average 5-9): 104 tokens/s spinning, 2,039-2,568 passive.
        env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return env


# Trials run side by side (studies' `concurrency`) start from worker threads, where Python cannot
# install signal handlers: each registers its forwarder here, and the study's main thread
# forwards SIGUSR1/SIGTERM to all of them (`forwarding_to_workers`).
_forwarders: dict[int, Any] = {}
_forwarders_lock = threading.Lock()


def in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def forwarding(forward: Any):
    """SIGUSR1 and SIGTERM go to `forward(signum, frame)` while inside: as this process's handlers
    in the main thread, else through the handlers of `forwarding_to_workers`."""
    import signal

    if in_main_thread():
        previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGUSR1, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return
    with _forwarders_lock:
        _forwarders[id(forward)] = forward
    try:
        yield
    finally:
        with _forwarders_lock:
            _forwarders.pop(id(forward), None)


@contextlib.contextmanager
def forwarding_to_workers():
    """In the main thread while worker threads run trials: a SIGUSR1/SIGTERM reaching this process
    goes on to every trial running now (each checkpoints, as a lone trial does)."""
    def forward_all(signum, frame):
        with _forwarders_lock:
            targets = list(_forwarders.values())
        for f in targets:
            f(signum, frame)

    with forwarding(forward_all):
        yield


@contextlib.contextmanager
def ignoring_usr1():
    """SIGUSR1 ignored while a child starts (it keeps that until its own handler is in place);
    a no-op in a worker thread, which cannot change handlers: there a SIGUSR1 in the child's
    first moments would end it rather than checkpoint it."""
    import signal

    if not in_main_thread():
        yield
        return
    old = signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGUSR1, old)


def call_forwarding_signals(cmd: Sequence[str], env: dict[str, str], rank: bool = False, **popen: Any) -> int:
    """Run a launch, passing SIGUSR1/SIGTERM on to the training ranks only.

    The launchers (accelerate, torchrun) would die on SIGUSR1, so they start with it ignored
    (an ignored signal stays ignored across exec); the ranks install their own handler, and
    checkpoint. Slurm's `--signal=USR1@T` reaches every process of a step: the same rule holds.
    `rank`: the command is itself the training process (one process, no launcher).
    """
    import signal

    import psutil

    with ignoring_usr1():
        proc = subprocess.Popen(list(cmd), env=env, **popen)

    def forward(signum, frame):  # noqa: ARG001
        if rank and proc.poll() is None:
            proc.send_signal(signal.SIGUSR1)  # the rank checkpoints
        try:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.send_signal(signal.SIGUSR1)  # launchers ignore it, ranks checkpoint
        except psutil.Error:
            pass

    with forwarding(forward):
        return proc.wait()


def _has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def run(
    params_path: str | Path,
    out_dir: str | Path,
    overrides: dict[str, Any] | None = None,
    extra_args: Sequence[str] = (),
    log_path: str | Path | None = None,
    check: bool = True,
) -> dict[str, Any]:
    """Run training on this machine, wait, and return its summary.json.

    A world of one runs as one plain process (`one_process_command`; run.launcher: auto), several
    processes under `accelerate launch`: the same trainer, engine, run folder and records.
    """
    from mt5study import config

    params = config.load(params_path, overrides)
    sets = [f"--set={k}={_yaml_scalar(v)}" for k, v in (overrides or {}).items()]
    launched_run = uses_launcher(params)
    if launched_run:
        cmd = accelerate_command(params, params_path, out_dir, extra_args=[*sets, *extra_args])
        env = launch_env(params.run.processes_per_node)
    else:
        cmd = one_process_command(params_path, out_dir, extra_args=[*sets, *extra_args])
        env = {k: v for k, v in launch_env(1).items() if k not in _LAUNCHER_VARS}  # not a rank of ours
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = Path(log_path) if log_path else out / "launch.log"
    code = None
    if not launched_run:  # forked from the study's warm server: imports paid once (trial_process)
        from mt5study import trial_process

        if trial_process.enabled():
            code = trial_process.call(cmd[3:], log)  # cmd[3:]: the arguments after `-m mt5study.cli`
    if code is None:
        with open(log, "a", encoding="utf-8") as f:  # appended: a resumed run keeps its history
            code = call_forwarding_signals(cmd, env, rank=not launched_run, stdout=f, stderr=subprocess.STDOUT)
    summary_path = out / "summary.json"
    recorded = read_json(summary_path).get("status") if summary_path.exists() else None
    # a launcher exits 0 for any recorded result; one plain process with its status's code
    expected = EXIT_OK if launched_run else status_exit_code(recorded)
    if code != expected or recorded is None or recorded == "failed":
        tail = log.read_text(encoding="utf-8", errors="replace")[-4000:]
        if check:
            raise RuntimeError(f"training in {out} exited {code}; log {log}:\n{tail}")
        return {"status": "failed", "exit_code": code, "log": str(log)}
    return read_json(summary_path)


def status_exit_code(status: str | None) -> int:
    """The exit code that tells a job script what a recorded run status means."""
    return {"preempted": EXIT_PREEMPTED, "failed": EXIT_FAILED, "diverged": EXIT_DIVERGED}.get(status or "", EXIT_OK)


def exit_code(out_dir: str | Path, launcher_code: int) -> int:
    """The exit code of a whole launch: EXIT_PREEMPTED when the run checkpointed on a signal."""
    summary = Path(out_dir) / "summary.json"
    if launcher_code == EXIT_OK and summary.exists():
        return status_exit_code(read_json(summary).get("status"))
    return launcher_code


def _yaml_scalar(v: Any) -> str:
    import json

    return json.dumps(v) if not isinstance(v, str) else v


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m mt5study.launch machines N [--omp-threads K] -- COMMAND...` (see local_machines_command)."""
    import argparse

    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    own, command = argv[:cut], argv[cut + 1:]  # everything after "--" is the per-machine command
    parser = argparse.ArgumentParser(prog="python -m mt5study.launch", description=main.__doc__)
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("machines", help=f"run COMMAND once per machine rank ({MACHINE_RANK_SLOT} = 0..N-1)")
    m.add_argument("num_machines", type=int)
    m.add_argument("--omp-threads", type=int, default=None, help="OMP_NUM_THREADS of every rank")
    args = parser.parse_args(own)
    if args.num_machines < 1 or not command:
        parser.error("needs N >= 1 and, after --, the per-machine command")
    return run_machines(args.num_machines, command, omp_threads=args.omp_threads)


if __name__ == "__main__":
    sys.exit(main())
