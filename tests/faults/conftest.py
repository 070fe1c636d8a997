"""The fault suite's figures and hypothesis profile.

Every test records what it did in the ledger: a fault injected (and whether the run survived
it), a bad input tried (and whether it was rejected with a message naming the argument, file or
key), and data lost (samples skipped or seen twice, rows lost or duplicated). The ledger is a
JSON-lines file, `$MT5STUDY_FAULTS_LEDGER` (set by `mt5study faults`) or one in the session's
temporary folder; the totals are printed at the end of the session (`mt5study.faults.figures`).
"""

from __future__ import annotations

import json
import os
import re
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Modest example counts and no per-example deadline: the 2 CI cores are shared.
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True,
                          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])  # the tally fixture accumulates on purpose
settings.register_profile("dev", max_examples=200, deadline=None,
                          suppress_health_check=[HealthCheck.function_scoped_fixture])
settings.load_profile(os.environ.get("MT5STUDY_HYPOTHESIS_PROFILE", "ci"))

INJECT = Path(__file__).parent / "inject"  # sitecustomize.py: fault points inside real processes


class Ledger:
    """Appends one JSON line per fault, bad input or loss count."""

    def __init__(self, path: Path, test: str):
        self.path, self.test = path, test

    def _write(self, **row) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"test": self.test, **row}) + "\n")

    @contextmanager
    def fault(self, name: str):
        """A fault injected; survived when the block (its checks) finishes."""
        ok = False
        try:
            yield
            ok = True
        finally:
            self._write(kind="fault", name=name, ok=ok)

    def bad_input(self, name: str, call, *names: str, error=Exception):
        """Call `call()`: it must raise `error` whose message names one of `names`. Returns the message."""
        ok, message = False, ""
        try:
            call()
            message = "accepted"
        except error as e:  # noqa: BLE001 (the kind is the caller's)
            message = str(e)
            ok = bool(message.strip()) and (not names or any(n.lower() in message.lower() for n in names))
        finally:
            self._write(kind="bad_input", name=name, ok=ok, message=message[:300])
        assert ok, f"{name}: not rejected with a message naming {names}: {message!r}"
        return message

    def rejected(self, name: str, ok: bool, message: str = "") -> None:
        """A bad input tried by the caller (a subprocess), rejected or not."""
        self._write(kind="bad_input", name=name, ok=bool(ok), message=message[:300])

    def lost(self, name: str, count: int) -> None:
        """Data items lost or duplicated by a fault (must be 0)."""
        self._write(kind="lost", name=name, count=int(count))


def _ledger_path(config) -> Path:
    env = os.environ.get("MT5STUDY_FAULTS_LEDGER")
    if env:
        return Path(env)
    path = Path(config._tmp_path_factory.getbasetemp()) / "faults-ledger.jsonl"  # noqa: SLF001
    return path


@pytest.fixture
def ledger(request) -> Ledger:
    name = re.sub(r"\s+", " ", request.node.nodeid)
    return Ledger(_ledger_path(request.config), name)


@pytest.fixture
def fault_env(tmp_path):
    """Environment for a launch with the injection hook on PYTHONPATH (add MT5STUDY_FAULT etc.)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(INJECT), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _mount_tmpfs(path: Path, options: str) -> bool:
    import subprocess

    path.mkdir(parents=True, exist_ok=True)
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                                                capture_output=True).returncode == 0


def _umount(path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nothing can be written to: a read-only tmpfs as root (root ignores permissions),
    else a folder without write permission."""
    path = tmp_path / "readonly"
    if _mount_tmpfs(path, "size=64k,ro"):
        yield path
        _umount(path)
    else:
        path.chmod(0o555)
        yield path
        path.chmod(0o755)


@pytest.fixture
def full_dir(tmp_path):
    """A folder on a 2 MiB tmpfs (needs root): room for a run's records, not for its checkpoints."""
    path = tmp_path / "full"
    if not _mount_tmpfs(path, "size=2m"):
        pytest.skip("mounting a small tmpfs needs root (CI runs as root)")
    yield path
    _umount(path)


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory):
    """An uninterrupted tiny run of 12 steps (checkpoints 4, 8, 12), its samples recorded: the
    baseline of the kill tests and the source of real checkpoints for the torn-checkpoint tests."""
    from mt5study.paths import PARAMS

    from .runs import STEPS, launch_cmd, run_launch

    base = tmp_path_factory.mktemp("reference")
    (base / "samples").mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(INJECT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               MT5STUDY_FAULT_SAMPLES=str(base / "samples"))
    run_launch(launch_cmd(PARAMS / "cpu" / "tiny.yaml", base / "run"), env, base / "launch.log")
    assert STEPS == 12
    return base


def pytest_terminal_summary(terminalreporter, exitstatus, config):  # noqa: ARG001
    try:
        path = _ledger_path(config)
    except Exception:  # noqa: BLE001 (no temp folder: nothing ran)
        return
    if not path.exists() or os.environ.get("MT5STUDY_FAULTS_LEDGER"):
        return  # `mt5study faults` prints the figures itself
    from mt5study.faults import figures, format_figures

    terminalreporter.write_line(format_figures(figures(path)))


def python() -> str:
    return sys.executable
