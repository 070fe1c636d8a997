"""Stale locks of PyTorch's JIT extension builds: DeepSpeed's CPU shared-memory collective op.

On CPU, DeepSpeed's TorchBackend builds its `deepspeed_shm_comm` op when the process group
starts (deepspeed.comm.torch.build_shm_op -> OpBuilder.jit_load -> torch.utils.cpp_extension.load).
torch serialises such builds with a FileBaton: a file `lock` in the op's build folder
($TORCH_EXTENSIONS_DIR/<op>, else ~/.cache/torch_extensions/py311_cpu/<op>), created with O_EXCL
before ninja runs and removed after, by every process, even when the op is already built. A
process killed in between leaves the file, and every later run waits for it in FileBaton.wait,
forever, with no message.

The lock names no process. A holder is alive while ninja or the compiler works in the build
folder (torch runs them there), and a holder spends only milliseconds with the lock outside
them; so a lock older than STALE_AFTER_S with no process working in its folder is stale: it is
removed, with one line on stderr naming it. The trainer calls `clear_stale_cpu()` before it
starts DeepSpeed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

OPS = ("deepspeed_shm_comm",)  # JIT-built ops a CPU run loads
STALE_AFTER_S = 10.0  # s: a live holder's lock is this young, or ninja works in its folder


def build_dir(name: str) -> Path:
    """The folder torch builds extension `name` in (as torch.utils.cpp_extension._get_build_directory)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return Path(root) / name
    import torch
    from torch.utils.cpp_extension import get_default_build_root

    if torch.version.hip is not None:
        accel = f"rocm{torch.version.hip.replace('.', '')}"
    elif torch.version.cuda is not None:
        accel = f"cu{torch.version.cuda.replace('.', '')}"
    else:
        accel = "cpu"
    py = f"py{sys.version_info.major}{sys.version_info.minor}{getattr(sys, 'abiflags', '')}"
    return Path(get_default_build_root()) / f"{py}_{accel}" / name


def workers_in(folder: Path) -> list[int]:
    """Ids of the processes whose working folder is `folder` or below it (ninja, the compiler)."""
    folder = folder.resolve()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = Path(os.readlink(entry / "cwd"))
        except OSError:  # gone, or another user's
            continue
        if cwd == folder or folder in cwd.parents:
            pids.append(int(entry.name))
    return pids


def clear_stale(names: tuple[str, ...] = OPS, stale_after_s: float = STALE_AFTER_S) -> list[Path]:
    """Remove the build locks of `names` that no live process holds; returns the removed paths."""
    removed = []
    for name in names:
        lock = build_dir(name) / "lock"
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            continue
        if age < stale_after_s or workers_in(lock.parent):
            continue
        try:
            lock.unlink()
        except FileNotFoundError:  # another rank of this launch removed it first
            continue
        built = "the op is built" if (lock.parent / f"{name}.so").exists() else "the op is not built yet"
        print(f"mt5study: removed the stale lock {lock} ({age:.0f} s old, no build running, {built}): "
              f"left by a process killed while torch JIT-compiled {name}", file=sys.stderr, flush=True)
        removed.append(lock)
    return removed


def use_one_ninja() -> str | None:
    """Put this interpreter's folder first on PATH when it holds `ninja`; returns that ninja.

    torch runs whichever `ninja` PATH finds. DeepSpeed installs the pip wheel's (1.13 here) beside
    the interpreter, and Debian's ninja-build (1.11) sits in /usr/bin: each discards the build log
    the other wrote ("build log version is too old; starting over") and rebuilds the op, 45-120 s
    of compiling on this machine during which every other run waits on the lock. An activated
    environment and a plain `.venv/bin/python` then alternate. One ninja for every process ends it.
    """
    ninja = Path(sys.executable).parent / "ninja"
    if not ninja.is_file():
        return None
    path = os.environ.get("PATH", "")
    if path.split(os.pathsep)[0] != str(ninja.parent):
        os.environ["PATH"] = os.pathsep.join([str(ninja.parent), path]) if path else str(ninja.parent)
    return str(ninja)


def use_own_build_root() -> str:
    """Build JIT ops under this environment (`<sys.prefix>/torch_extensions`) unless
    TORCH_EXTENSIONS_DIR says where; returns the folder.

    torch's default, ~/.cache/torch_extensions, is shared by every environment of the user: two
    checkouts (a CI clone beside a working copy) write build files with their own include paths
    into the same folder, and each rebuilds the op the other just built."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        root = str(Path(sys.prefix) / "torch_extensions")
        os.environ["TORCH_EXTENSIONS_DIR"] = root
    return root


def use_one_toolchain() -> None:
    """This environment's ninja and build folder for JIT ops, in every process that builds them."""
    use_one_ninja()
    use_own_build_root()


def clear_stale_cpu() -> list[Path]:
    """`clear_stale()` where DeepSpeed builds the op at start-up: on CPU (no CUDA device); and
    the build runs with this environment's ninja and build folder (`use_one_toolchain`)."""
    import torch

    if torch.cuda.is_available():
        return []
    use_one_toolchain()
    return clear_stale()
