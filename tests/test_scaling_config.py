"""Scaling params: the files load; bad input is a ConfigError or a named error before training."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from mt5study.config import ConfigError
from mt5study.paths import PARAMS, ROOT
from mt5study.scaling import config as scaling_config
from mt5study.scaling import fits, study

FILES = sorted(p for p in PARAMS.rglob("scaling*.yaml") if "base" not in p.name)


def test_there_are_cpu_smoke_and_gpu_files():
    names = {str(p.relative_to(PARAMS)) for p in FILES}
    assert {"cpu/scaling.yaml", "cpu/scaling_smoke.yaml"} <= names
    assert any(n.startswith("gpu/scaling") for n in names)


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_scaling_file_loads_and_every_trial_validates(path):
    params = scaling_config.load(path)
    if path.parent.name == "cpu":  # the GPU templates name data that is not on this machine
        studies = study.validate_all(params, str(path))
        assert set(studies) == set(params.scaling.sizes)
    info = study.size_info(params)
    assert info["held_out"].sum() == 1 and info["held_out"].iloc[-1]


def _write(tmp_path: Path, change) -> Path:
    doc = yaml.safe_load((PARAMS / "cpu" / "scaling_smoke.yaml").read_text())
    change(doc["scaling"])
    p = tmp_path / "s.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


@pytest.mark.parametrize("change, needles", [
    (lambda s: s.update(sizes=["ladder-1", "ladder-2", "ladder-3"]), ["scaling.sizes", "at least 4"]),
    (lambda s: s.update(sizes=["ladder-1", "ladder-2", "ladder-3", "ladder-9"]), ["ladder-9", "not a model preset"]),
    (lambda s: s.update(sizes=["ladder-2", "ladder-1", "ladder-3", "ladder-4"]), ["smallest to largest"]),
    (lambda s: s.update(holdout="mini"), ["holdout", "mini"]),
    (lambda s: s["axes"].update({"optim.lr": [1e-3, 1e-2]}), ["axes.optim.lr", "at least 3"]),
    (lambda s: s["axes"].pop("run.global_batch"), ["axes must be exactly"]),
    (lambda s: s["fixed"].update({"model.preset": "mini"}), ["fixed.model.preset"]),
    (lambda s: s["budget"].update(rule="iso_flop"), ["needs budget.flops"]),
    (lambda s: s["budget"].update(tokens_per_parameter=-1), ["scaling.budget.tokens_per_parameter", "-1"]),
    (lambda s: s["steptime"].update(runs=[[2, 3]]), ["[1, 0]"]),
    (lambda s: s.update(sizez=[]), ["scaling.sizez", "Extra inputs"]),
])
def test_bad_input_names_file_key_and_value(tmp_path, change, needles):
    p = _write(tmp_path, change)
    with pytest.raises(ConfigError) as e:
        scaling_config.load(p)
    assert str(p) in str(e.value)
    for n in needles:
        assert n in str(e.value), str(e.value)


def test_a_budget_too_small_for_a_step_is_refused_before_training(tmp_path):
    p = _write(tmp_path, lambda s: s["budget"].update(tokens_per_parameter=1e-4))
    with pytest.raises(ConfigError, match=r"size ladder-1 gets \d+ tokens, 0 steps at batch 8"):
        study.validate_all(scaling_config.load(p), str(p))


def test_a_size_with_no_completed_trial_is_a_named_error():
    params = scaling_config.load(PARAMS / "cpu" / "scaling_smoke.yaml")
    results = pd.DataFrame({"size": ["ladder-1"] * 2, "status": ["failed", "diverged"], "lr": [1e-3, 1e-2],
                            "global_batch": [2, 2], "final_eval_loss": [None, None]})
    with pytest.raises(fits.FitError, match="size ladder-1: no completed trial"):
        study.optima(params, results, ["ladder-1"])
    with pytest.raises(fits.FitError, match="size ladder-2: no completed trial"):
        study.optima(params, results, ["ladder-2"])


def test_paths_in_files_exist():
    for path in FILES:
        base = yaml.safe_load(path.read_text())["scaling"]["base"]
        assert (ROOT / base).is_file(), base


def test_lr_by_width_scales_each_sizes_grid_as_one_over_d_model():
    from mt5study.scaling import study

    p = scaling_config.load(ROOT / "params/cpu/scaling.yaml")
    base = p.scaling.axes["optim.lr"]
    assert study.size_axes(p, "ladder-1")["optim.lr"] == base
    e = p.scaling.lr_width_exponent
    assert study.size_axes(p, "ladder-2")["optim.lr"] == [float(f"{v / 2**e:.3g}") for v in base]  # d_model 64 vs 32
    assert study.size_axes(p, "ladder-4")["optim.lr"] == [float(f"{v / 4**e:.3g}") for v in base]  # 128 vs 32
    assert e == 2.0
    assert study.size_axes(p, "ladder-4")["run.global_batch"] == p.scaling.axes["run.global_batch"]
    flat = scaling_config.load(ROOT / "params/cpu/scaling.yaml", {"scaling.lr_by_width": False})
    assert study.size_axes(flat, "ladder-4")["optim.lr"] == base
