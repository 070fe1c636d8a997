"""Typed params: every file in params/ loads; every bad input is a ConfigError naming it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mt5study import config
from mt5study.config import ConfigError
from mt5study.paths import PARAMS

ALL_PARAMS = sorted(PARAMS.rglob("*.yaml"))


def test_there_are_params_files():
    assert len(ALL_PARAMS) >= 2


@pytest.mark.parametrize("path", ALL_PARAMS, ids=lambda p: str(p.relative_to(PARAMS)))
def test_every_params_file_loads(path):
    params = config.load(path)
    assert isinstance(params, config.Section)
    # the resolved config round-trips through its own validation
    assert config.validate(config.to_dict(params), str(path), type(params)) == params
    from mt5study.studies.config import StudyParams, validate_trials

    if isinstance(params, StudyParams):  # and every trial of a study is a valid run
        _, trials = validate_trials(params, str(path))
        assert trials


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(text)
    return p


GOOD = """
model: {preset: tiny}
optim: {lr: 1e-3}
run: {steps: 4, micro_batch: 2, grad_accum: 2, global_batch: 8, processes_per_node: 2}
"""


def test_good_file_and_scientific_floats(tmp_path):
    p = config.load(write(tmp_path, GOOD))
    assert p.optim.lr == pytest.approx(1e-3)
    assert p.run.world_size == 2 and p.run.effective_global_batch == 8


@pytest.mark.parametrize(
    "text, needles",
    [
        (GOOD.replace("optim: {lr: 1e-3}", "optim: {lr: 1e-3, lrr: 2}"), ["optim.lrr", "Extra inputs"]),
        (GOOD.replace("steps: 4", "steps: four"), ["run.steps", "'four'"]),
        (GOOD.replace("steps: 4", "steps: 0"), ["run.steps", "greater than 0"]),
        (GOOD.replace("steps: 4", "steps: 4.0"), ["run.steps", "4.0"]),
        (GOOD.replace("preset: tiny", "preset: huge"), ["model.preset", "'huge'"]),
        (GOOD.replace("global_batch: 8", "global_batch: 16"), ["run", "global_batch=16", "= 8"]),
        (GOOD.replace("processes_per_node: 2}", "processes_per_node: 2, offload_params: true}"), ["offload_params", "zero_stage"]),
        (GOOD.replace("optim: {lr: 1e-3}\n", ""), ["optim", "Field required"]),
        (GOOD.replace("optim: {lr: 1e-3}", "optim: {lr: -1.0}"), ["optim.lr", "-1.0"]),
        (GOOD + "extra_section: {a: 1}\n", ["extra_section"]),
    ],
)
def test_invalid_values_name_file_key_and_value(tmp_path, text, needles):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        config.load(path)
    msg = str(e.value)
    assert str(path) in msg
    for n in needles:
        assert n in msg, msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        config.load(tmp_path / "nope.yaml")


def test_not_yaml(tmp_path):
    with pytest.raises(ConfigError, match="not valid YAML"):
        config.load(write(tmp_path, "model: {preset: [tiny\n"))


def test_not_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="mapping"):
        config.load(write(tmp_path, "- a\n- b\n"))


def test_overrides_are_validated(tmp_path):
    path = write(tmp_path, GOOD)
    assert config.load(path, {"run.steps": 9}).run.steps == 9
    with pytest.raises(ConfigError, match="run.steps"):
        config.load(path, {"run.steps": "nine"})
    with pytest.raises(ConfigError, match="grad_accum 3"):
        # breaks the batch arithmetic: 2 x 3 x 2 != 8
        config.load(path, {"run.grad_accum": 3})
    with pytest.raises(ConfigError, match="not a section"):
        config.load(path, {"run.steps.x": 1})


def test_parse_override_types():
    assert config.parse_override("run.steps=10") == ("run.steps", 10)
    assert config.parse_override("optim.lr=3e-4") == ("optim.lr", 3e-4)
    assert config.parse_override("run.precision=bf16") == ("run.precision", "bf16")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        config.parse_override("run.steps")


def test_cli_refuses_bad_params_before_launch(tmp_path):
    path = write(tmp_path, GOOD.replace("steps: 4", "steps: -1"))
    out = tmp_path / "run"
    for cmd in ("train", "launch"):
        r = subprocess.run([sys.executable, "-m", "mt5study.cli", cmd, "--params", str(path), "--out", str(out)],
                           capture_output=True, text=True)
        assert r.returncode == 2, r.stderr
        assert "run.steps" in r.stderr and str(path) in r.stderr
    assert not (out / "summary.json").exists()
