"""One-process trials forked from a warm server, so a study pays its imports once, not per trial.

A world-of-one trial (`launch.uses_launcher` false) is the same `mt5study train` run as
`launch.run` starts with `python -m mt5study.cli train`, but the process comes from
multiprocessing's forkserver, which imported torch, transformers, accelerate, DeepSpeed and the
trainer once when the study started. Each trial is still its own process (a fork of the
server, which has imported those modules but never run a kernel or started a thread), with its
own Accelerate state, process group and memory, and its exit code read as `launch.run` reads a
plain process's. Measured on this 2-core machine: `import mt5study.train` costs 8.7 s of a
64.5 s trial (previous session, `mini`), paid once here instead of per trial.

The server starts with `launch.launch_env(1)` (minus launcher variables) as its environment:
OpenMP and glibc read theirs when torch loads, so a trial that needs another environment
(another OMP_NUM_THREADS or MT5STUDY_OUTPUTS, say) restarts the server with it. Set
MT5STUDY_FORKSERVER=0 to run every trial as a fresh process.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, Sequence

from mt5study import launch

# What every trial imports and caches, loaded once in the server (mt5study.trial_server).
PRELOAD = ["mt5study.trial_server"]
# Libraries read environment variables when they load (OpenMP's, glibc's, DeepSpeed's accelerator,
# Hugging Face's cache and offline switches, MT5STUDY_OUTPUTS): a server is only reused for a
# trial whose environment is the one it started with, but for these, which change per call.
_VOLATILE_VARS = ("PYTEST_CURRENT_TEST",)

_server: dict[str, Any] = {}  # {"ctx": context, "env": the load-time variables it started with}
_starting = threading.Lock()


def enabled() -> bool:
    return os.environ.get("MT5STUDY_FORKSERVER", "1") != "0"


def _trial_env() -> dict[str, str]:
    """What `launch.run` gives a one-process trial: the launch environment, no launcher variables."""
    return {k: v for k, v in launch.launch_env(1).items() if k not in launch._LAUNCHER_VARS}


def _context(env: dict[str, str]):
    """The forkserver context, started with `env` on first use (its children inherit it), and
    restarted when a trial needs another environment (None where it cannot be restarted)."""
    from multiprocessing import forkserver

    wanted = {k: v for k, v in env.items() if k not in _VOLATILE_VARS}
    if _server:
        if _server["env"] == wanted:
            return _server["ctx"]
        stop = getattr(forkserver._forkserver, "_stop", None)  # CPython 3.8-3.13: stops the server
        if stop is None:
            return None  # cannot restart it here: the caller starts a fresh process
        stop()  # its forked trials have ended (each call waits for its own)
        _server.clear()
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:  # the server process is spawned now, with this environment
        with main_hidden():
            forkserver.ensure_running()
    finally:
        os.environ.clear()
        os.environ.update(saved)
    _server.update(ctx=ctx, env=wanted)
    return ctx


def _child(argv: list[str], log_path: str, cwd: str, env: dict[str, str]) -> None:
    """In the forked trial: output to the run's log, then `mt5study train` and its exit code."""
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    code = 1
    try:
        from mt5study.cli import main

        code = main(argv)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:  # noqa: BLE001 - the trial's traceback goes to its log, as a process's would
        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    # multiprocessing's bootstrap turns this into the exit code, after its own finalizers
    # (semaphores the trial's libraries made); no atexit handler of the server's modules runs.
    sys.exit(code)


@contextlib.contextmanager
def main_hidden():
    """Start processes (forkserver or spawn) without multiprocessing's re-import of the caller's
    main module.

    A started Process normally re-runs the caller's `__main__` (script or notebook kernel) in the
    child so that functions defined there can be found. Ours need nothing from it (their targets
    live in mt5study), and a script without a `__main__` guard would run its study again inside
    every child: the main module's file and spec are hidden while the processes start."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__file__", "__spec__") if k in main.__dict__}
    main.__dict__.pop("__file__", None)
    main.__dict__["__spec__"] = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def call(argv: Sequence[str], log_path: str | Path) -> int | None:
    """Run `mt5study <argv>` in a process forked from the warm server; its exit code.

    None when no server fits this environment (the caller starts a fresh process instead).
    SIGUSR1 and SIGTERM reaching the caller go on to the trial as SIGUSR1: it checkpoints, as a
    one-process run started by `launch.call_forwarding_signals` does.
    """
    env = _trial_env()
    with _starting:  # trials side by side (worker threads) start one at a time: one server, one __main__
        ctx = _context(env)
        if ctx is None:
            return None
        proc = ctx.Process(target=_child, args=(list(argv), str(log_path), os.getcwd(), env), daemon=False)
        with launch.ignoring_usr1(), main_hidden():  # until the handler below is in place
            proc.start()

    def forward(signum, frame):  # noqa: ARG001
        if proc.pid and proc.exitcode is None:
            os.kill(proc.pid, signal.SIGUSR1)

    try:
        with launch.forwarding(forward):
            proc.join()
    finally:
        if proc.exitcode is None:  # the caller was interrupted: the trial does not outlive it
            proc.terminate()
            proc.join()
    code = proc.exitcode
    return code if code >= 0 else 128 - code  # killed by signal N: 128 + N, as a shell reports it
