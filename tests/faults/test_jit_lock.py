"""A process killed while DeepSpeed JIT-compiles its CPU shm_comm op leaves torch's build lock;
without care every later run waits on it forever (FileBaton.wait). The trainer removes a lock
that no live process holds (mt5study.jit_locks) and says so on one line; a live build's lock is
left alone. The fault is injected in a temporary TORCH_EXTENSIONS_DIR (a copy of the real build
folder): the real cache is never touched.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from mt5study import jit_locks
from mt5study.paths import PARAMS

OP = "deepspeed_shm_comm"


def _stale_lock(folder, age_s: float = 3600):
    lock = folder / "lock"
    lock.write_bytes(b"")  # torch's FileBaton: an empty file created with O_EXCL
    old = time.time() - age_s
    os.utime(lock, (old, old))
    return lock


@pytest.fixture
def extensions(tmp_path, monkeypatch):
    """A TORCH_EXTENSIONS_DIR holding a copy of the op's build folder (built, if setup built it)."""
    real = jit_locks.build_dir(OP)  # read before TORCH_EXTENSIONS_DIR points elsewhere
    root = tmp_path / "torch_extensions"
    if real.is_dir():
        shutil.copytree(real, root / OP, ignore=shutil.ignore_patterns("lock"))
    else:
        (root / OP).mkdir(parents=True)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(root))
    return root


def test_only_locks_without_a_live_holder_are_removed(extensions, capsys, ledger):
    folder = extensions / OP
    lock = _stale_lock(folder, age_s=1)
    assert jit_locks.clear_stale() == [] and lock.exists()  # young: a holder may be about to run ninja
    _stale_lock(folder)
    worker = subprocess.Popen(["sleep", "60"], cwd=folder)  # as ninja or the compiler works there
    try:
        assert jit_locks.clear_stale() == [] and lock.exists()
    finally:
        worker.kill()
        worker.wait()
    with ledger.fault("stale JIT build lock, no holder"):
        assert jit_locks.clear_stale() == [lock] and not lock.exists()
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(lock) in err[0] and "stale lock" in err[0]
    assert jit_locks.clear_stale() == []  # nothing left to do


def test_a_run_completes_despite_a_stale_lock(extensions, tmp_path, ledger):
    lock = _stale_lock(extensions / OP)
    with ledger.fault("stale DeepSpeed JIT lock left by a killed process, then a training run"):
        r = subprocess.run([sys.executable, "-m", "mt5study.cli", "train", "--params", str(PARAMS / "cpu" / "tiny.yaml"),
                            "--out", str(tmp_path / "run"), "--set=run.one_process=true", "--set=run.steps=2",
                            "--set=run.eval_every=0", "--set=run.checkpoint_every=0"],
                           capture_output=True, text=True, timeout=600, env=dict(os.environ))  # hangs without the fix
        assert r.returncode == 0, r.stderr[-3000:]
        assert f"removed the stale lock {lock}" in r.stderr
        assert not lock.exists()
