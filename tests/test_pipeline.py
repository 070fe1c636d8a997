"""The default study's pipeline params, and the CLI's refusal of bad ETL targets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mt5study import config, pipeline
from mt5study.config import ConfigError
from mt5study.paths import NOTEBOOKS, OUTPUTS, PARAMS


def test_default_pipeline_names_existing_notebooks_and_params():
    p = config.load(PARAMS / "cpu" / "pipeline.yaml")
    assert [s.name for s in p.pipeline.steps][:2] == ["etl", "pretrain"]
    for step in p.pipeline.steps:
        if step.notebook:
            assert (NOTEBOOKS / step.notebook).is_file(), step.notebook
        if step.params:
            config.load(pipeline.resolve(step.params), step.overrides or None)


def test_bad_steps_are_refused(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"pipeline": {"steps": [{"name": "x", "kind": "train"}]}}))
    with pytest.raises(ConfigError, match="needs `params`"):
        config.load(path)
    path.write_text(yaml.safe_dump({"pipeline": {"steps": [{"name": "a b", "notebook": "n.ipynb"}]}}))
    with pytest.raises(ConfigError, match="pipeline.steps.0.name"):
        config.load(path)
    ok = config.load(PARAMS / "cpu" / "pipeline.yaml")
    with pytest.raises(ValueError, match="no pipeline step named"):
        pipeline.run(ok, only=["nope"], outputs=tmp_path)


def test_relative_output_parameters_are_resolved():
    assert pipeline._resolved("outputs/precision") == str(OUTPUTS / "precision")
    assert pipeline._resolved(3) == 3


def test_etl_cli_refuses_to_overwrite_a_completed_output(tmp_path):
    out = tmp_path / "etl"
    out.mkdir()
    (out / "manifest.json").write_text("{}")
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "etl", "--params", str(PARAMS / "cpu" / "etl_smoke.yaml"),
                        "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 1 and "already holds a completed ETL output" in r.stderr
    assert "Traceback" not in r.stderr
