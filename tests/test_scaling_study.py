"""The scaling study's orchestration end to end with a stand-in trainer whose final eval loss is
a known surface: the runner's folders and tables, the prediction written before the held-out
grid, the gap, the laws and the recipe. (The real trainer runs in notebook 06 under nbval.)"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from mt5study import config, launch, records
from mt5study.paths import PARAMS
from mt5study.scaling import config as scaling_config
from mt5study.scaling import study
from mt5study.scaling.budget import non_embedding_parameters

SMOKE = PARAMS / "cpu" / "scaling_smoke.yaml"
LR_EXP, B_EXP = -0.3, 0.2  # of the stand-in's optimum against non-embedding parameters


def optimum(preset: str) -> tuple[float, float]:
    n = non_embedding_parameters(preset) / 1e6
    return 0.01 * n**LR_EXP, 6.5 * n**B_EXP


def fake_run(params_path, out_dir, overrides=None, extra_args=(), log_path=None, check=True):
    """Write what the trainer writes, with loss = 2 + 0.2 log(lr/eta*)^2 + 0.1 log(B/B*)^2."""
    params = config.load(params_path, overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    eta, b = optimum(params.model.preset)
    gb = params.run.effective_global_batch
    loss = 2 + 0.2 * math.log(params.optim.lr / eta) ** 2 + 0.1 * math.log(gb / b) ** 2
    per_step = gb * (params.data.input_length + params.data.target_length)
    records.write_json_atomic(out / "config.json", config.to_dict(params))
    with open(out / "metrics.jsonl", "w") as f:
        for step in range(1, params.run.steps + 1):
            f.write(json.dumps({"step": step, "tokens": step * per_step, "loss": loss + 1 / step,
                                "step_seconds": 0.01}) + "\n")
    summary = {"status": "completed", "steps": params.run.steps, "tokens": params.run.steps * per_step,
               "final_eval_loss": loss, "final_train_loss": loss, "wall_seconds": 0.1}
    records.write_json_atomic(out / "summary.json", summary)
    return summary


@pytest.fixture
def fake_trainer(monkeypatch):
    monkeypatch.setattr(launch, "run", fake_run)


def test_held_out_proof_recovers_a_known_optimum(tmp_path, fake_trainer):
    params = scaling_config.load(SMOKE, {"scaling.steptime": None, "scaling.fit.bootstrap": 40,
                                         "scaling.budget.tokens_per_parameter": 0.05,
                                         "scaling.axes": {"run.global_batch": [2, 4, 8, 16],
                                                          "optim.lr": [3.0e-3, 1.0e-2, 3.0e-2, 9.0e-2]}})
    out = study.run_study(params, str(SMOKE), tmp_path)
    root = tmp_path
    pred = json.loads((root / "prediction.json").read_text())
    proof = json.loads((root / "holdout.json").read_text())
    assert pred["fitted_on"] == ["ladder-1", "ladder-2", "ladder-3"]
    # the prediction was written before any held-out trial ran
    first_held = min(p.stat().st_mtime for p in (root / "sizes" / "ladder-4" / "grid" / "trials").glob("*/summary.json"))
    assert (root / "prediction.json").stat().st_mtime <= first_held
    eta, _ = optimum("ladder-4")
    assert pred["lr"]["value"] == pytest.approx(eta, rel=0.02)
    assert pred["lr"]["extrapolation"]  # ladder-4 is beyond the fitted sizes
    assert proof["gap_percent"] <= 1.0 and proof["inside_grid"]
    laws = out["tables"]["laws"].set_index("quantity")
    assert laws.loc["eta*", "exponent"] == pytest.approx(LR_EXP, abs=0.01)
    assert set(out["tables"]) >= {"sizes", "optima", "laws", "holdout", "recommendation", "days"}
    assert (out["tables"]["optima"]["edge"] == "").all()
    tables = study_tables(root)
    assert set(tables) == set(out["tables"])


def study_tables(root):
    from mt5study import scaling

    return scaling.report_tables(root)


def test_edge_of_the_grid_is_flagged(tmp_path, fake_trainer):
    params = scaling_config.load(SMOKE, {"scaling.steptime": None, "scaling.recommend": None,
                                         "scaling.fit.bootstrap": 20,
                                         "scaling.axes": {"run.global_batch": [2, 4, 8],
                                                          "optim.lr": [1.0e-1, 2.0e-1, 4.0e-1]}})
    study.run_sizes(params, str(SMOKE), ["ladder-1"], tmp_path)
    table, _ = study.optima(params, study.read_results(params, tmp_path, ["ladder-1"]), ["ladder-1"])
    assert "lr is the grid's smallest" in table["edge"].iloc[0]
