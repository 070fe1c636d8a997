"""scripts/gpu_check.sh: the plan, its params and the JSON, checked on a CPU (the GPU run is not CI's)."""

from __future__ import annotations

import json
import runpy
import subprocess

import pytest

from mt5study import config
from mt5study.paths import ROOT

SCRIPT = ROOT / "scripts" / "gpu_check.sh"
gpu_check = runpy.run_path(str(ROOT / "scripts" / "gpu_check.py"), run_name="gpu_check")


def test_peak_lookup():
    peak = gpu_check["peak_tflops"]
    assert peak("NVIDIA H100 80GB HBM3") == 989.0 and peak("NVIDIA H200") == 989.0
    assert peak("NVIDIA H100 PCIe") == 756.0 and peak("NVIDIA A100-SXM4-80GB") == 312.0
    assert peak("NVIDIA GeForce RTX 4090") is None


def test_dry_run_writes_valid_params_and_a_plan(tmp_path):
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path), "--device-name", "NVIDIA H200"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["dry_run"] and report["complete"] and report["device"]["peak_tflops_16bit"] == 989.0
    parts = report["parts"]
    assert set(parts) == {"bf16_zero3", "bf16_zero0", "fp16_zero3", "span_corruption"}
    for name in ("bf16_zero3", "bf16_zero0", "fp16_zero3"):
        p = parts[name]
        assert p["status"] == "planned" and "launch" in p["command"]
        params = config.load(tmp_path / "params" / f"{name}.yaml")  # what would be launched validates
        assert config.to_dict(params)["run"]["precision"] == name[:4]
        assert params.model.preset == "mt5-base" and params.model.vocab_size == 250_112
        assert params.run.world_size == 1 and params.run.peak_tflops_per_device == 989.0
        assert 0 < p["timeout_s"] <= 120 and p["memory_estimate_bytes"]["total"] > 2**30
    assert sum(p["timeout_s"] for p in parts.values() if "timeout_s" in p) + 90 <= 480  # fits 8 minutes
    assert parts["bf16_zero3"]["params"]["run"]["zero_stage"] == 3 and parts["bf16_zero0"]["params"]["run"]["zero_stage"] == 0
    assert "no ETL output" in parts["span_corruption"]["reason"]


def test_dry_run_with_an_etl_output_plans_the_span_corruption_part(tmp_path):
    etl = tmp_path / "etl"
    etl.mkdir()
    (etl / "manifest.json").write_text(json.dumps({"inputs_length": 64, "targets_length": 14, "vocab_size": 104}))
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--out", str(tmp_path / "o"), "--etl", str(etl),
                        "--parts", "span_corruption"], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    part = json.loads((tmp_path / "o" / "gpu_check.json").read_text())["parts"]["span_corruption"]
    params = config.load(tmp_path / "o" / "params" / "span_corruption.yaml")
    assert part["status"] == "planned" and params.data.path == str(etl)
    assert (params.data.input_length, params.data.target_length) == (64, 14) and params.model.vocab_size is None


@pytest.mark.slow
def test_smoke_part_runs_the_real_launch_and_records_it(tmp_path):
    """The whole flow of one part (launch, run folder, figures, JSON) at the tiny preset on a CPU."""
    r = subprocess.run(["bash", str(SCRIPT), "--smoke", "--parts", "bf16_zero3", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=900)
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    part = report["parts"]["bf16_zero3"]
    assert r.returncode == 0 and part["status"] == "completed", part.get("output_tail", r.stderr[-2000:])
    assert len(part["losses"]) == 3 and all(x > 0 for x in part["losses"])
    assert part["peak_memory_bytes"] > 0 and part["memory_estimate_bytes"]["total"] > 0
    assert report["device"]["peak_memory_is"] == "host RSS" and report["complete"]
