"""Every process builds DeepSpeed's CPU op with the same ninja (mt5study.jit_locks.use_one_ninja):
two ninja versions on PATH each discard the other's build log and rebuild the op."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mt5study import jit_locks


def test_the_environment_ninja_comes_first_whatever_path_the_process_got(monkeypatch):
    own = Path(sys.executable).parent / "ninja"
    assert own.is_file(), "DeepSpeed's dependency `ninja` installs it beside the interpreter"
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # a process started without the environment activated
    assert jit_locks.use_one_ninja() == str(own)
    assert shutil.which("ninja") == str(own)
    jit_locks.use_one_ninja()  # idempotent: not prepended twice
    assert monkeypatch is not None and __import__("os").environ["PATH"].split(":").count(str(own.parent)) == 1


def test_ops_build_under_this_environment_unless_told_otherwise(monkeypatch, tmp_path):
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)
    assert jit_locks.use_own_build_root() == str(Path(sys.prefix) / "torch_extensions")
    assert jit_locks.build_dir("deepspeed_shm_comm") == Path(sys.prefix) / "torch_extensions" / "deepspeed_shm_comm"
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))  # an explicit choice is kept
    assert jit_locks.use_own_build_root() == str(tmp_path)
