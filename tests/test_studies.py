"""Studies: validation before launch, rungs, LR suggestion, trial reuse, failed trials, tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from mt5study import config, records
from mt5study.config import ConfigError
from mt5study.studies import figures, probes, runner
from mt5study.studies.config import trial_name, validate_trials


def study_file(tmp_path, **study):
    doc = {"study": {"name": "s", "base": "params/cpu/tiny.yaml", "budget_tokens": 1280, **study}}
    p = tmp_path / "study.yaml"
    p.write_text(yaml.safe_dump(doc))
    return p


def test_bad_axis_value_stops_the_study_before_anything_launches(tmp_path):
    p = study_file(tmp_path, axes={"run.precision": ["fp32", "fp8"]})
    params = config.load(p)
    with pytest.raises(ConfigError) as e:
        runner.run_grid(params, str(p), tmp_path / "out")
    assert "precision=fp8" in str(e.value) and "run.precision" in str(e.value) and "'fp8'" in str(e.value)
    assert not (tmp_path / "out").exists()


def test_global_batch_must_split_over_micro_batches_and_ranks(tmp_path):
    p = study_file(tmp_path, axes={"run.global_batch": [16, 12]})  # tiny: micro 4 x 2 ranks
    with pytest.raises(ConfigError, match="global_batch=12"):
        validate_trials(config.load(p), str(p))


def test_trials_get_steps_from_the_token_budget(tmp_path):
    p = study_file(tmp_path, axes={"run.global_batch": [8, 16, 32]}, budget_tokens=40 * 16 * 4)
    _, trials = validate_trials(config.load(p), str(p))
    steps = {name: ov["run.steps"] for name, ov in trials}
    assert steps == {"global_batch=8": 8, "global_batch=16": 4, "global_batch=32": 2}
    grad_accum = {name: ov["run.grad_accum"] for name, ov in trials}
    assert grad_accum == {"global_batch=8": 1, "global_batch=16": 2, "global_batch=32": 4}


def test_unknown_study_key_is_refused(tmp_path):
    p = study_file(tmp_path, axes={"optim.lr": [1e-3]}, budgets=3)
    with pytest.raises(ConfigError, match="study.budgets"):
        config.load(p)


def test_rungs_are_fractions_of_the_budget_in_examples():
    assert runner.rung_examples(1476, 3, 3) == [164, 492, 1476]
    assert runner.rung_examples(128, 2, 2) == [64, 128]


def test_suggest_lr_on_a_synthetic_range_curve():
    lr = np.geomspace(1e-5, 1.0, 60)
    # flat, then falling fastest around 1e-2, minimum near 1e-1, then blowing up
    loss = 5 - 2 / (1 + np.exp(-(np.log10(lr) + 2) * 4)) + np.where(lr > 0.1, (np.log10(lr) + 1) * 20, 0)
    s = probes.suggest_lr(pd.DataFrame({"step": range(60), "lr": lr, "loss": loss}), smoothing=0.0)
    assert 3e-3 < s["lr_steepest"] < 3e-2
    assert 3e-2 < s["lr_min_loss"] < 2e-1
    assert s["lr_min_loss_over_10"] == pytest.approx(s["lr_min_loss"] / 10)


def test_trial_names_are_folder_safe():
    assert trial_name({"model.checkpoint": "/a b/c"}) == "checkpoint=_a_b_c"


@pytest.mark.slow
def test_study_reuses_trials_records_failures_and_rebuilds_the_same_table(tmp_path):
    p = study_file(tmp_path, axes={"model.checkpoint": [None, "/nonexistent/mt5"]}, budget_tokens=2 * 16 * 40,
                   fixed={"run.eval_every": 0, "run.checkpoint_every": 0})
    params = config.load(p)
    out = tmp_path / "out"
    table = runner.run_grid(params, str(p), out)
    assert len(table) == 2
    ok = table[table.trial == "checkpoint=None"].iloc[0]
    bad = table[table.trial != "checkpoint=None"].iloc[0]
    assert ok.status == "completed" and ok.steps == 2
    assert bad.status == "failed" and "nonexistent" in bad.error  # recorded, and the study went on
    summary = out / "grid" / "trials" / "checkpoint=None" / "summary.json"
    stamp = summary.stat().st_mtime_ns
    again = runner.run_grid(params, str(p), out)
    assert summary.stat().st_mtime_ns == stamp  # reused, not retrained
    assert len(again) == 2  # no duplicated rows
    pd.testing.assert_frame_equal(table.drop(columns=["wall_seconds"]), again.drop(columns=["wall_seconds"]))
    first = runner.results_table(out / "grid", list(params.study.axes))
    second = runner.results_table(out / "grid", list(params.study.axes))
    pd.testing.assert_frame_equal(first, second)
    assert pd.read_parquet(out / "grid" / "results.parquet").equals(second)
    curves = pd.read_parquet(out / "grid" / "curves.parquet")
    assert set(curves.trial) == {"checkpoint=None"} and list(curves.step) == [1, 2]
    fig = figures.loss_curves(curves, table, hue="checkpoint")
    assert fig.axes
    assert records.read_json(summary)["status"] == "completed"

    # A changed study retrains the trials whose params changed, and the table holds only the
    # current grid (an earlier grid's folders stay on disk, out of the table).
    p2 = study_file(tmp_path, axes={"model.checkpoint": [None]}, budget_tokens=2 * 16 * 40,
                    fixed={"run.eval_every": 1, "run.checkpoint_every": 0})
    changed = runner.run_grid(config.load(p2), str(p2), out)
    assert summary.stat().st_mtime_ns != stamp
    assert list(changed.trial) == ["checkpoint=None"]
    assert records.read_json(out / "grid" / "trials" / "checkpoint=None" / "config.json")["run"]["eval_every"] == 1


def _results(folder, rows):
    (folder / "grid").mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "grid" / "results.parquet", index=False)
    return folder


def _row(trial, data="aaaa", code="cccc", stale="", **kw):
    return {"trial": trial, "status": "completed", "precision": "fp32", "zero_stage": 0, "reason": None,
            "final_eval_loss": 1.0, "tokens_per_second": 10.0, "peak_memory_bytes": 1, "global_batch": 8,
            "lr": 1e-3, "data": data, "code": code, "machine": "CPU x2", "stale": stale, **kw}


def test_report_refuses_to_compare_runs_of_different_data_or_code_unless_told(tmp_path):
    from mt5study.studies import report

    prec = _results(tmp_path / "precision", [_row("a"), _row("b")])
    bl = _results(tmp_path / "batch_lr", [_row("x", code="dddd"), _row("y", code="dddd", status="failed", data="?")])
    with pytest.raises(report.MixedInputsError) as e:
        report.findings(prec, bl)
    msg = str(e.value)
    assert "different code" in msg and "cccc: precision (2)" in msg and "dddd: batch_lr (1)" in msg
    assert "allow_mixed=True" in msg  # the failed row's unknown data is not compared
    f = report.findings(prec, bl, allow_mixed=True)
    assert set(f["provenance"]["code"]) == {"cccc", "dddd"}
    assert "Computed from code: cccc [precision (2)]; dddd [batch_lr (1)]" in report.describe(f)

    bl2 = _results(tmp_path / "bl2", [_row("x", data="bbbb", stale="code changed: loss.py")])
    with pytest.raises(report.MixedInputsError, match=r"different data \(aaaa: precision \(2\); bbbb: bl2 \(1\)\)"):
        report.findings(prec, bl2)
    same = _results(tmp_path / "bl3", [_row("x", stale="code changed: loss.py")])
    text = report.describe(report.findings(prec, same))
    assert text.startswith("!!! STALE RESULTS KEPT ON PURPOSE (keep_stale): bl3/x: code changed: loss.py")
    old = _results(tmp_path / "old", [{k: v for k, v in _row("x").items() if k not in ("data", "code", "machine", "stale")}])
    with pytest.raises(report.MixedInputsError, match=r"\?: old \(1\)"):  # a table from before provenance
        report.findings(prec, old)


def test_seeds_repeat_every_grid_point_seed_by_seed(tmp_path):
    p = study_file(tmp_path, axes={"run.precision": ["fp32", "bf16"]}, seeds=[0, 1, 2])
    params = config.load(p)
    _, trials = validate_trials(params, str(p))
    assert [name for name, _ in trials] == [f"precision={pr}__seed={s}" for s in (0, 1, 2) for pr in ("fp32", "bf16")]
    assert all(ov["run.seed"] == int(name[-1]) for name, ov in trials)
    for bad, match in (({"seeds": [1, 1]}, "distinct"), ({"seeds": [0, 1], "fixed": {"run.seed": 3}}, "not both")):
        q = study_file(tmp_path, axes={"run.precision": ["fp32"]}, **bad)
        with pytest.raises(ConfigError, match=match):
            config.load(q)


def _seed_rows(precision, stage, losses, status="completed"):
    return [_row(f"precision={precision}__zero_stage={stage}__seed={s}", precision=precision, zero_stage=stage, seed=s,
                 final_eval_loss=v, final_train_loss=v, wall_seconds=10.0, status=status, diverged_at_step=None)
            for s, v in enumerate(losses)]


def test_summary_table_and_verdicts_carry_the_spread_over_seeds(tmp_path):
    from mt5study.studies import report

    rows = (_seed_rows("fp32", 0, [6.10, 6.20, 6.00]) + _seed_rows("bf16", 0, [6.11, 6.21, 6.01])
            + _seed_rows("fp16", 0, [7.5, 7.6, 7.4]))
    results = pd.DataFrame(rows)
    t = figures.summary_table(results, ["precision", "zero_stage"]).set_index("precision")
    assert list(t.index) == ["fp32", "bf16", "fp16"]
    assert t.loc["fp32", "final eval loss"] == pytest.approx(6.1) and t.loc["fp32", "± sd (eval)"] == pytest.approx(0.1)
    assert t.loc["fp32", "n (eval)"] == 3 and "bars and bands: ± 1 sd over 3 seeds" in figures.spread_note(
        results, ["precision", "zero_stage"])
    verdicts = report.precision_verdicts(results)
    # bf16 is 0.01 above fp32 for every seed: the pairing by seed sees it, although seeds spread by 0.1
    assert verdicts[0].startswith("ZeRO-0: bf16 is worse than fp32 on final eval loss by 0.010")
    assert "paired t-interval over seeds" in verdicts[0]
    assert verdicts[1].startswith("ZeRO-0: fp16 is worse than fp32")

    one = pd.DataFrame(_seed_rows("fp32", 0, [6.1]) + _seed_rows("bf16", 0, [6.2]))
    assert pd.isna(figures.summary_table(one, ["precision", "zero_stage"])["± sd (eval)"]).all()
    assert "no spread can be given" in figures.spread_note(one, ["precision", "zero_stage"])
    assert "no spread can be given, so no verdict" in report.precision_verdicts(one)[0]
    fig = figures.precision_bars(one.assign(tokens_per_second=1.0, peak_memory_bytes=1))
    assert all(len(ax.lines) == 0 for ax in fig.axes)  # no error bar of zero width

    diverged = pd.DataFrame(_seed_rows("fp32", 0, [6.1, 6.2]) + _seed_rows("fp16", 0, [None, None], status="diverged"))
    diverged.loc[diverged.precision == "fp16", "diverged_at_step"] = [7, 9]
    assert report.precision_verdicts(diverged) == ["fp16 at ZeRO-0 did not complete (diverged x2; diverged at step 7, 9)."]


def test_batch_lr_verdict_names_the_best_and_its_ties():
    from mt5study.studies import report

    rows = []
    for b, lr, losses in ((16, 1e-3, [5.0, 5.02, 4.98]), (32, 1e-3, [5.01, 5.03, 4.99]), (64, 1e-3, [5.6, 5.62, 5.58])):
        rows += [_row(f"b{b}s{s}", global_batch=b, lr=lr, seed=s, final_eval_loss=v) for s, v in enumerate(losses)]
    v = report.batch_lr_verdict(pd.DataFrame(rows))
    assert (v["best_batch"], v["best_lr"]) == (16, 1e-3)
    assert v["sentence"].startswith("global batch 16 at lr 0.001 is best on final eval loss: 5.000 ± 0.020 (n=3 seeds)")
    assert v["tied"] == ["global batch 32 at lr 0.001"]


def test_readme_measured_section_is_read_from_outputs_and_replaces_only_its_block(tmp_path):
    import importlib.util

    from mt5study.paths import ROOT

    spec = importlib.util.spec_from_file_location("readme_measured", ROOT / "scripts" / "readme_measured.py")
    rm = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(rm)
    out = tmp_path / "outputs"
    rows = _seed_rows("fp32", 0, [6.10, 6.20, 6.00]) + _seed_rows("bf16", 0, [6.11, 6.21, 6.01])
    _results(out / "precision", [{**r, "steps": 12, "tokens_per_second": 100.0} for r in rows])
    block = rm.section(out)
    assert "fp32 ZeRO-0 6.100 ± 0.100 (n=3, 100 tokens/s)" in block and "12 steps per trial" in block
    assert "bf16 is worse than fp32 on final eval loss by 0.010" in block
    assert "Batch × learning rate study: not run yet." in block and "not run yet" in block.split("Default study")[1]
    assert "Translation study: not run yet." in block and "Scaling study: not run yet." in block
    (out / "scaling").mkdir()
    (out / "scaling" / "scaling.json").write_text(
        '{"trial_overhead": {"trials": 40, "wall_seconds": 1000.0, "overhead_seconds": 120.0, "fraction": 0.12}}')
    assert "Per-trial overhead (process start, set-up, final save): 120 s of 1000 s over 40 trials (12.0%)." in rm.section(out)
    readme = f"# x\n\n## Measured here\n{rm.BEGIN}\nold numbers\n{rm.END}\nkept\n"
    new = rm.replace(readme, block)
    assert "old numbers" not in new and block in new and new.endswith(f"{rm.END}\nkept\n")
    assert rm.replace(new, block) == new  # idempotent
    with pytest.raises(ValueError, match="README.md: needs exactly one line"):
        rm.replace("# no markers\n", block)
    # After `study --only scaling`, the earlier full run's record supplies the other steps' times.
    env = lambda t, c: {"hardware": {"cpu": "x", "cpu_count": 2}, "versions": {}, "time_utc": t,  # noqa: E731
                        "git": {"commit": c}, "argv": ["cli.py", "study"]}
    full = {"env": env("T1", "aaaaaaaaaaaa"), "steps": [{"step": "etl", "seconds": 60.0}, {"step": "scaling", "seconds": 600.0},
                                                         {"step": "report", "seconds": 6.0}]}
    records.write_json_atomic(out / "pipeline.json", {"env": env("T2", "bbbbbbbbbbbb"),
                                                      "steps": [{"step": "scaling", "seconds": 540.0},
                                                                {"step": "report", "seconds": 12.0}]})
    records.write_json_atomic(tmp_path / "full.json", full)
    alone = rm.section(out)
    assert "Default study wall time** (`study`): 9.2 min; scaling 9.0, report 0.2 min" in alone
    merged = rm.section(out, tmp_path / "full.json")
    assert "10.2 min; etl 1.0, scaling 9.0, report 0.2 min" in merged
    assert "etl from T1 at aaaaaaaaaa; scaling, report from T2 at bbbbbbbbbb (`--only`)." in merged


def test_tables_for_people_name_units():
    t = figures.for_people(pd.DataFrame({"zero_stage": [3], "peak_memory_bytes": [3 * 2**29], "wall_seconds": [12.345],
                                         "final_eval_loss": [6.123456]}))
    assert list(t.columns) == ["ZeRO stage", "peak memory (GiB)", "wall time (s)", "final eval loss"]
    assert t.iloc[0].tolist() == [3, 1.5, 12.3, 6.123]


def test_a_diverged_trial_stays_in_the_table_with_its_step(tmp_path):
    cfg = config.to_dict(config.load("params/cpu/tiny.yaml", {"run.precision": "fp16", "run.zero_stage": 0}))
    for name, summary in (("precision=fp16__seed=0", {"status": "diverged", "diverged_at_step": 7, "steps": 7,
                                                       "reason": "loss scale skipped 24 steps", "fp16_engine": "torch_amp"}),
                          ("precision=fp16__seed=1", {"status": "completed", "steps": 10, "final_eval_loss": 5.0,
                                                       "final_train_loss": 5.1, "fp16_engine": "torch_amp"})):
        records.write_json_atomic(tmp_path / "trials" / name / "config.json", {**cfg, "run": {**cfg["run"], "seed": int(name[-1])}})
        records.write_json_atomic(tmp_path / "trials" / name / "summary.json", summary)
    t = runner.results_table(tmp_path, ["run.precision", "run.seed"])
    d = t.set_index("seed").loc[0]
    assert d.status == "diverged" and d.diverged_at_step == 7 and d.fp16_engine == "torch_amp"
    s = figures.summary_table(t, ["precision"]).iloc[0]
    assert (s["diverged"], s["completed"], s["n (eval)"]) == (1, 1, 1) and pd.isna(s["± sd (eval)"])


def test_qa_findings_give_both_starts_with_their_spread_and_a_verdict(tmp_path):
    from mt5study.studies import report

    rows = [{"init": init, "seed": s, "lang": "all", "normalization": "language-aware", "questions": 40,
             "exact_match": em, "f1": f1}
            for init, scores in (("pretrained", [(20, 40.0), (22, 44.0), (18, 42.0)]),
                                 ("random_init", [(2, 10.0), (3, 12.0), (1, 11.0)]))
            for s, (em, f1) in enumerate(scores)]
    rows.append({**rows[0], "normalization": "squad", "f1": 99.0})  # another normalisation: not counted
    pd.DataFrame(rows).to_parquet(tmp_path / "results.parquet", index=False)
    # the runs' curves: the pretrained start 1.0 lower for 30 steps, then level (the same batches per seed)
    for init in ("pretrained", "random_init"):
        for s in range(3):
            run = tmp_path / "runs" / init / f"seed{s}"
            run.mkdir(parents=True)
            lines = [{"step": k, "loss": 5.0 + 0.1 * ((k + s) % 3) + (1.0 if init == "random_init" and k <= 30 else 0.0)
                         + 0.01 * s * (init == "pretrained")} for k in range(10, 110, 10)]
            lines[-1]["eval_loss"] = 5.0 + 0.01 * s + 0.1 * (init == "pretrained")
            (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    pd.DataFrame([{"init": i, "seed": s, "run": "/moved/away"} for i in ("pretrained", "random_init") for s in range(3)]
                 ).to_parquet(tmp_path / "runs.parquet", index=False)
    qa = report.qa_findings(tmp_path)
    assert qa["pretrained"]["f1"] == 42.0 and qa["pretrained"]["f1_sd"] == pytest.approx(2.0) and qa["pretrained"]["n"] == 3
    assert qa["verdict"].startswith("the pretrained start is better than random initialisation on F1 by 31.0")
    assert "paired t-interval over seeds" in qa["verdict"]
    hs = qa["head_start"]
    assert hs["lead_first"] == pytest.approx(1.0 - 0.01) and hs["lead_until"] == 30 and hs["seeds"] == 3
    assert "worse than random initialisation on held-out loss at step 100 by 0.100" in hs["text"]
    base = {"hardware": {"cpu": "x", "cpu_count": 2}, "per_precision": [], "not_completed": [],
            "fastest_precision": "fp32", "batch_lr_completed": 0, "batch_lr_trials": 0}
    text = report.describe({**base, "qa": qa})
    assert "QA fine-tuned from random initialisation:" in text and "random_init" not in text
    assert any(line.startswith("QA, fine-tuning curves: ") for line in report.conclusions({"qa": qa}))
    assert report.qa_findings(tmp_path / "absent") is None


def test_the_grid_compared_with_the_search_is_the_mean_over_seeds():
    rows = [_row(f"b{b}s{s}", global_batch=b, lr=1e-3, seed=s, steps=10, final_eval_loss=v)
            for b, losses in ((8, [5.0, 6.0]), (16, [5.4, 5.4])) for s, v in enumerate(losses)]
    g = runner.grid_as_search_results(pd.DataFrame(rows), ["run.global_batch", "optim.lr"]).set_index("run.global_batch")
    assert g.loc[8, "value"] == pytest.approx(5.5) and g.loc[16, "value"] == pytest.approx(5.4)  # seed 0 alone would pick 8
    assert g.loc[8, "compute"] == 2 * 10 * 8 and (g.state == "COMPLETE").all()
