"""Step-time model arithmetic and the recommendation's plans (pure functions, no training)."""

from __future__ import annotations

import pytest

from mt5study import memory
from mt5study.scaling import steptime
from mt5study.scaling.config import RecommendConfig
from mt5study.scaling.recommend import plan, recommend
from mt5study.scaling import fits


def test_comm_volume_per_stage_follows_the_zero_paper():
    psi = 1_000_000
    assert steptime.comm_bytes(psi, 0, 1) == 0  # one device: nothing to send
    two = {z: steptime.comm_bytes(psi, z, 2, "fp32") for z in range(4)}
    assert two[0] == two[1] == two[2] == 2 * psi * 4 * 0.5  # 2 Psi elements, ring: (n-1)/n
    assert two[3] == pytest.approx(1.5 * two[0])  # ZeRO-3: 3 Psi
    assert steptime.comm_bytes(psi, 3, 8, "bf16") == pytest.approx(3 * psi * 2 * 7 / 8)
    assert steptime.comm_bytes(psi, 2, 8, "bf16", micro_steps=4) == 4 * steptime.comm_bytes(psi, 2, 8, "bf16")
    assert steptime.comm_bytes(psi, 1, 8, "bf16", micro_steps=4) == steptime.comm_bytes(psi, 1, 8, "bf16")


def test_predict_adds_compute_and_exposed_communication():
    t = steptime.predict(flops_per_step=1e12, devices=4, peak_flops=1e12, mfu=0.5, n_params=10**6,
                         zero_stage=3, bandwidth=1e9, overlap=0.25, precision="fp32", latency=1e-3,
                         n_modules=10)
    assert t["compute_s"] == pytest.approx(0.5)
    comm = 3 * 10**6 * 4 * 0.75 / 1e9 + (2 * 10 + 1) * 1e-3
    assert t["comm_s"] == pytest.approx(comm)
    assert t["step_s"] == pytest.approx(0.5 + 0.75 * comm)
    assert steptime.predict(1e9, 1, 1e9, 1.0, 10**6, 3, 1e9)["comm_s"] == 0


def test_modules_with_parameters_counts_the_meta_model():
    n = steptime.modules_with_parameters("ladder-1")
    # shared embedding, lm_head, per encoder layer q k v o wi_0 wi_1 wo + 2 norms, relative bias ...
    assert 20 <= n <= 40


RC = dict(tokens=1e12, devices={"a100-40gb": dict(peak_tflops=312.0, memory_gib=40.0, gpus_per_node=8,
                                                  intra_node_gbps=300.0, inter_node_gbps=25.0)})


def test_plan_fits_the_memory_model_and_prefers_fewest_gpus():
    rc = RecommendConfig.model_validate(RC)
    p = plan("mt5-xxl", rc, 40.0)
    assert p is not None and p["gpus"] > 1 and p["zero_stage"] == 3
    est = memory.estimate("mt5-xxl", 3, "bf16", p["gpus"], p["micro_batch"], 1024, 229,
                          None if p["offload"] == "none" else p["offload"], activation_checkpointing=True)
    assert est["total"] <= 0.9 * 40 * memory.GIB
    smaller = plan("mt5-small", rc, 80.0)
    assert smaller["gpus"] == 1 and smaller["zero_stage"] == 0


def test_recommendation_marks_extrapolation_and_gives_days():
    rc = RecommendConfig.model_validate({**RC, "presets": ["mt5-small", "mt5-xxl"], "nodes": [1, 4]})
    laws = {"lr": fits.fit_power_law("lr", [1e5, 1e6, 1e7], [0.03, 0.015, 0.0075]),
            "batch_tokens": fits.fit_power_law("b", [1e4, 1e5, 1e6], [600, 1200, 2400])}
    summary, days = recommend(rc, laws, "parameters", "tokens")
    assert summary["extrapolation"].all()
    xxl = summary.set_index("preset").loc["mt5-xxl"]
    assert xxl["lr"] < summary.set_index("preset").loc["mt5-small", "lr"]  # exponent -0.3
    d = days[(days.preset == "mt5-xxl") & (days.nodes == 4)]
    assert d["days"].iloc[0] > 0
    assert (days[days.preset == "mt5-small"]["days"].diff().dropna() < 0).all()  # more nodes, fewer days


def test_validate_calibrates_the_gather_cost_on_one_rank_and_predicts_two(monkeypatch):
    import pandas as pd

    from mt5study.scaling import config as scaling_config, workers
    from mt5study.paths import ROOT

    params = scaling_config.load(ROOT / "params/cpu/scaling_smoke.yaml")
    modules = steptime.modules_with_parameters(params.scaling.steptime.preset)
    flops, peak, gather = 1e9, 1e10, 2e-3
    one0 = flops / (peak * 0.5)  # MFU 0.5
    runs = pd.DataFrame([
        {"world_size": 1, "zero_stage": 0, "step_seconds": one0, "flops_per_step": flops},
        {"world_size": 1, "zero_stage": 3, "step_seconds": one0 + 2 * modules * gather, "flops_per_step": flops},
        {"world_size": 2, "zero_stage": 3, "step_seconds": 1.0, "flops_per_step": 2 * flops},
    ])
    inputs = {"peak_flops_per_rank": {1: peak, 2: peak}, "link": {"bandwidth_bytes_per_s": 1e9, "latency_s": 1e-4}}
    t = workers.validate(params, runs, inputs)
    assert t["gather_ms"].iloc[0] == pytest.approx(gather * 1e3)
    assert t["calibrated"].tolist() == [True, True, False]
    assert t["error_percent"].iloc[:2].abs().max() == pytest.approx(0, abs=1e-9)  # fitted by construction
    two = t.iloc[2]
    assert two["predicted_gather_s"] == pytest.approx(2 * modules * gather)
    assert two["predicted_step_seconds"] == pytest.approx(one0 + two["predicted_comm_s"] + 2 * modules * gather)
    # Without a [1, 3] run there is nothing to calibrate on: the gather term is 0, not guessed.
    t0 = workers.validate(params, runs.drop(index=1), inputs)
    assert (t0["predicted_gather_s"] == 0).all()


def test_inputs_are_measured_with_every_rank_busy_and_kept_with_the_runs(tmp_path, monkeypatch):
    import os
    import time

    from mt5study.paths import PARAMS
    from mt5study.scaling import config as scaling_config
    from mt5study.scaling import workers

    params = scaling_config.load(PARAMS / "cpu" / "scaling_smoke.yaml")
    calls = []
    monkeypatch.setattr(steptime, "measure_peak_together", lambda threads, world: calls.append(world) or 1e9 / world)
    monkeypatch.setattr(steptime, "measure_link", lambda world, mib: {"bandwidth_bytes_per_s": 1e9, "latency_s": 1e-4})
    run = tmp_path / "steptime" / "trials" / "world=2__zero_stage=0"
    run.mkdir(parents=True)
    (run / "summary.json").write_text("{}")
    first = workers.measure_inputs(params, tmp_path, [1, 2, 2])
    assert calls == [1, 2] and first["peak_flops_per_rank"] == {1: 1e9, 2: 5e8} and first["peak_method"] == "together"
    again = workers.measure_inputs(params, tmp_path, [1, 2])  # the runs unchanged: the same inputs, not re-measured
    assert calls == [1, 2] and {int(k): v for k, v in again["peak_flops_per_rank"].items()} == {1: 1e9, 2: 5e8}
    later = time.time() + 5
    os.utime(run / "summary.json", (later, later))  # a run trained again: measured again
    workers.measure_inputs(params, tmp_path, [1, 2])
    assert calls == [1, 2, 1, 2]
