"""Packaging: environment.yml, pyproject and the lock agree; the console script exists."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib

import yaml

from mt5study.paths import ROOT


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def pyproject_requirements() -> list[str]:
    d = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return d["project"]["dependencies"] + d["project"]["optional-dependencies"]["dev"]


def test_environment_yml_lists_the_same_dependencies():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(x["pip"] for x in env["dependencies"] if isinstance(x, dict) and "pip" in x)
    conda_side = sorted(r for r in pip if not r.startswith("-e"))
    assert sorted(conda_side) == sorted(pyproject_requirements())  # same names and specifiers


def test_lock_pins_every_requirement():
    lock = {_name(line): line for line in (ROOT / "requirements-lock.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    missing = [r for r in pyproject_requirements() if _name(r) not in lock]
    assert not missing, f"requirements-lock.txt lacks {missing}"
    assert all("==" in line for line in lock.values())


def test_transformers_5_with_the_released_untied_head():
    # transformers 5 is the supported major; mt5study.model unties mT5's output layer again
    # (its MT5Config forces tie_word_embeddings=True), so the released counts hold.
    import transformers

    from mt5study.model import RELEASED_PARAMETERS, build

    assert int(transformers.__version__.split(".")[0]) >= 5
    net = build("mt5-small", device="meta")
    assert net.lm_head.weight is not net.shared.weight
    assert sum(p.numel() for p in net.parameters()) == RELEASED_PARAMETERS["mt5-small"]


def test_console_script():
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "info"], capture_output=True, text=True)
    assert r.returncode == 0
    assert "12,921,057,280" in r.stdout


def test_jupyter_kernel_and_lab_are_installed():
    """`make lab` / papermill / nbval find the project's kernel (scripts/setup.sh registers it)."""
    from jupyter_client.kernelspec import KernelSpecManager

    specs = KernelSpecManager().find_kernel_specs()
    assert "mt5study" in specs, specs
    spec = KernelSpecManager().get_kernel_spec("mt5study")
    assert spec.argv[0].startswith(sys.prefix) or spec.argv[0] == "python"
    r = subprocess.run([sys.executable, "-m", "jupyterlab", "--version"], capture_output=True, text=True)
    assert r.returncode == 0 and r.stdout.strip()
