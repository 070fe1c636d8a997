"""Numerical faults at study level: a grid whose one learning rate drives the loss to inf/NaN.
That trial ends `diverged` with the step where the loss first went non-finite; the study goes on
and trains the other trials; the results table lists every trial, the diverged one with its
status and step. Real runs: the tiny model, one process, 3 steps per trial.
"""

from __future__ import annotations

import math

import pandas as pd
import yaml

from mt5study import config, records
from mt5study.studies import runner

LRS = [1.0e-3, 1.0e30, 3.0e-3]  # 1e30: Adam's first update (~lr per weight) overflows fp32 activations


def test_study_goes_on_after_a_diverged_trial(tmp_path, ledger):
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump({"study": {
        "name": "diverge", "base": "params/cpu/tiny.yaml", "axes": {"optim.lr": LRS},
        "budget_tokens": 3 * 16 * 40,  # 3 steps of 16 examples x 40 tokens
        "fixed": {"run.one_process": True, "run.eval_every": 0, "run.checkpoint_every": 0,
                  "run.log_every": 1, "optim.warmup_steps": 0}}}))
    params = config.load(p)
    out = tmp_path / "out"
    with ledger.fault("a trial's loss goes non-finite mid-study"):
        table = runner.run_grid(params, str(p), out)
        assert len(table) == len(LRS)
        by_lr = {row.lr: row for row in table.itertuples()}
        bad = by_lr[1.0e30]
        assert bad.status == "diverged", table[["trial", "status", "error"]]
        assert 1 <= bad.diverged_at_step <= 3 and "non-finite" in bad.reason
        assert math.isnan(bad.final_train_loss)
        for lr in (1.0e-3, 3.0e-3):  # trained after (and before) the diverged one
            assert by_lr[lr].status == "completed" and by_lr[lr].steps == 3 and math.isfinite(by_lr[lr].final_train_loss)
        saved = pd.read_parquet(out / "grid" / "results.parquet")
        assert list(saved.status) == list(table.status) and saved.diverged_at_step.notna().sum() == 1
        folder = out / "grid" / "trials" / bad.trial
        assert not (folder / "model").exists()  # no weights saved for a diverged run
        assert records.read_json(folder / "summary.json")["diverged_at_step"] == bad.diverged_at_step
        ledger.lost("results rows of a 3-trial study with one diverged", len(LRS) - len(saved))
