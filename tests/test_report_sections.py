"""What notebook 05 and the site show of translation and scaling: tables for readers, headline
sentences from the numbers, one line for a study that has not run (no error)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from mt5study import records
from mt5study.scaling import tables as scaling_tables
from mt5study.studies import report
from mt5study.translation import tables as translation_tables


def _scaling_folder(root, gap=0.4, edge=""):
    """A finished scaling study's folder with the tables study.run_study writes (same columns)."""
    t = root / "tables"
    t.mkdir(parents=True)
    pd.DataFrame({"size": ["ladder-1", "ladder-2", "ladder-3"], "parameters": [1.2e5, 9.6e5, 7.7e6],
                  "tokens": [608.0, 4864.0, 38912.0], "compute": [1e9, 6e10, 4e12],
                  "lr_opt": [0.0123456, 0.00823, 0.0051], "lr_low": [0.01, 0.006, 0.004], "lr_high": [0.015, 0.011, 0.0069],
                  "batch_opt": [3.3333, 4.1, 5.77], "batch_low": [2.1, 3.0, 4.0], "batch_high": [5.2, 6.1, 7.9],
                  "batch_tokens_opt": [260.0, 320.0, 450.0], "batch_tokens_low": [1.0] * 3, "batch_tokens_high": [1.0] * 3,
                  "loss_opt": [5.123456, 4.7, 4.3], "grid_best_lr": [0.01, 0.01, 0.003], "grid_best_batch": [4, 4, 8],
                  "grid_best_loss": [5.2, 4.75, 4.31], "trials": [9] * 3, "fitted_points": [9] * 3,
                  "residual_sd": [0.01] * 3, "edge": ["", edge, ""]}).to_parquet(t / "optima.parquet")
    laws = pd.DataFrame({"quantity": ["eta*", "B* (tokens/step)"], "x": ["parameters", "parameters"],
                         "exponent": [-0.2345678, 0.1], "exponent_low": [-0.35, 0.02], "exponent_high": [-0.11, 0.19],
                         "prefactor": [0.1, 80.0], "prefactor_low": [0.05, 40.0], "prefactor_high": [0.2, 160.0],
                         "x_min": [1.2e5] * 2, "x_max": [7.7e6] * 2, "confidence": [0.9] * 2})
    laws.to_parquet(t / "laws.parquet")
    proof = {"size": "ladder-4", "fitted_on": ["ladder-1", "ladder-2", "ladder-3"], "predicted_lr": 0.00312,
             "predicted_batch": 8, "extrapolation": True, "loss_at_prediction": 4.1234567, "grid_best_loss": 4.1,
             "gap_percent": gap, "surface_at_prediction": 4.11, "inside_grid": True, "rank_among_grid": 2,
             "grid_trials": 9, "held_out_edge": ""}
    pd.DataFrame([proof]).to_parquet(t / "holdout.parquet")
    step = pd.DataFrame({"world_size": [1, 2], "zero_stage": [0, 3], "step_seconds": [0.0512345, 0.09],
                         "predicted_step_seconds": [0.0512345, 0.081], "error_percent": [0.0, -10.04],
                         "tokens_per_second": [2400.4, 1300.2], "peak_memory_gib_per_rank": [0.61234, 0.52],
                         "within_tolerance": [True, True]})
    step.to_parquet(t / "steptime.parquet")
    pd.DataFrame({"preset": ["mt5-small", "mt5-xxl"], "parameters": [3.0e8, 1.29e10], "non_embedding": [4e7, 1.1e10],
                  "tokens": [1.05e12] * 2, "lr": [0.002, 0.000412345], "lr_low": [0.001, 0.0002], "lr_high": [0.004, 0.0009],
                  "batch": [512, 2048], "batch_low": [300.5, 900.1], "batch_high": [900.2, 4000.7],
                  "batch_tokens": [6.5e5, 2.6e6], "extrapolation": [True, True],
                  "a100-40gb_gpus": [1.0, float("nan")], "a100-40gb_micro_batch": [16.0, float("nan")],
                  "a100-40gb_zero": ["0/none", None]}).to_parquet(t / "recommendation.parquet")
    pd.DataFrame({"preset": ["mt5-small", "mt5-small", "mt5-xxl", "mt5-xxl"], "device": ["a100-40gb"] * 4,
                  "nodes": [1, 2, 1, 2], "gpus": [8, 16, 8, 16], "days": [3.14159, 1.6, float("nan"), float("nan")],
                  "note": ["", "", "needs >= 64 GPUs", "needs >= 64 GPUs"]}).to_parquet(t / "days.parquet")
    records.write_json_atomic(root / "scaling.json", {"holdout": proof, "laws": laws.to_dict("records"),
                                                      "steptime": step[["world_size", "zero_stage", "step_seconds",
                                                                        "predicted_step_seconds", "error_percent"]].to_dict("records")})
    return root


def _no_float_noise(df: pd.DataFrame) -> None:
    """Every cell a reader sees is short: no NaN, no float printed with 10+ digits."""
    for v in df.astype(str).to_numpy().ravel():
        assert v not in ("nan", "None", "NaN"), df
        assert not any(len(tok) > 9 for tok in v.replace("(", " ").replace(")", " ").replace(",", " ").split()
                       if tok.replace(".", "").replace("-", "").replace("+", "").isdigit()), v


def test_scaling_tables_for_readers(tmp_path):
    root = _scaling_folder(tmp_path / "scaling")
    t = scaling_tables.for_readers(root)
    assert set(t) == {"optima", "laws", "holdout", "steptime", "recommendation", "days"}
    for table in t.values():
        _no_float_noise(table)
    assert t["optima"]["η* peak lr (interval)"][0] == "0.0123 (0.01 to 0.015)"
    assert t["laws"]["exponent b (interval)"][0] == "-0.235 (-0.35 to -0.11)"
    assert t["holdout"]["gap (%)"][0] == "+0.40" and t["holdout"]["gap within 1 %"][0] == "yes"
    assert t["steptime"]["error (%)"].tolist() == ["+0.0", "-10.0"]
    rec = t["recommendation"].set_index("preset")
    assert rec.loc["mt5-xxl", "a100-40gb: GPUs"] == "does not fit" and rec.loc["mt5-small", "a100-40gb: GPUs"] == "1"
    days = t["days"].set_index("preset")
    assert days.loc["mt5-small", "a100-40gb, 1 node (days)"] == "3.1"
    assert days.loc["mt5-xxl", "a100-40gb, 2 nodes (days)"] == "needs >= 64 GPUs"


def test_scaling_sentences_come_from_the_numbers(tmp_path):
    good = scaling_tables.sentences(_scaling_folder(tmp_path / "a", gap=0.4))
    assert "a gap of +0.40 %, which meets the 1 % goal" in good[0] and "held-out ladder-4" in good[0]
    assert "eta* ∝ parameters^-0.235 (-0.350 to -0.110)" in good[1] and "90 %" in good[1]
    assert "2 ranks, ZeRO-3: -10.0 %" in good[2] and "1 rank, ZeRO-0" not in good[2]  # calibration is not a prediction
    assert "calibrated on 1 rank at ZeRO-0: MFU)" in good[2]
    assert good[3].startswith("Recipe for mt5-xxl at 1,050B tokens: peak lr 0.000412")
    bad = scaling_tables.sentences(_scaling_folder(tmp_path / "b", gap=-3.5, edge="lr at the grid's low end"))
    assert "which misses the 1 % goal" in bad[0]
    assert any("optimum of ladder-2 lies on its grid's edge" in s for s in bad)
    assert scaling_tables.findings(tmp_path / "absent") is None
    assert scaling_tables.findings(tmp_path / "a")["sentences"] == good
    # a law whose bootstrap refits were not finite says so instead of printing "nan to nan"
    summary = records.read_json(tmp_path / "a" / "scaling.json")
    summary["laws"][0].update(exponent_low=float("nan"), exponent_high=float("nan"))
    records.write_json_atomic(tmp_path / "a" / "scaling.json", summary)
    laws_line = scaling_tables.sentences(tmp_path / "a")[1]
    assert "eta* ∝ parameters^-0.235 (no interval: some bootstrap refits were not finite)" in laws_line
    # With a 1-rank ZeRO-3 run the gather cost is calibrated too, and said.
    summary["steptime"] = [{**summary["steptime"][0], "calibrated": True, "gather_ms": 0.0},
                           {"world_size": 1, "zero_stage": 3, "step_seconds": 0.07, "predicted_step_seconds": 0.07,
                            "error_percent": 0.0, "calibrated": True, "gather_ms": 0.3456},
                           {**summary["steptime"][1], "calibrated": False, "gather_ms": 0.3456}]
    records.write_json_atomic(tmp_path / "a" / "scaling.json", summary)
    step_line = scaling_tables.sentences(tmp_path / "a")[2]
    assert "predicted: 2 ranks, ZeRO-3: -10.0 %" in step_line and "rank, ZeRO-3: +0.0" not in step_line
    assert "calibrated on 1 rank at ZeRO-0, ZeRO-3: MFU, 0.346 ms per ZeRO-3 module gather" in step_line
    assert "nan" not in laws_line.lower()


def _translation_findings():
    rows = []
    for pair in ("en-de", "de-en", "mean over pairs"):
        for init, (m, sd, n) in {"pretrained": (21.04, 1.26, 3), "random_init": (9.95, None, 1)}.items():
            rows.append({"pair": pair, "decoding": "greedy", "init": init, "bleu_mean": m / 2, "bleu_sd": sd,
                         "chrf_mean": m, "chrf_sd": sd, "seeds": n})
            rows.append({"pair": pair, "decoding": "beam2", "init": init, "bleu_mean": m, "bleu_sd": sd,
                         "chrf_mean": m, "chrf_sd": sd, "seeds": n})
    return {"pairs": ["en-de", "de-en"], "sizes": {"de-en": {"train": 207, "validation": 8, "test": 8},
                                                  "en-de": {"train": 1234, "validation": 8, "test": 8}},
            "table": rows, "sentences": ["Translation: chrF++ mean over pairs (beam2): ...",
                                         "Translation: chrF++ mean over pairs (greedy): pretrained 21.0 ..."]}


def test_translation_tables_for_readers():
    f = _translation_findings()
    sizes = translation_tables.sizes_table(f)
    assert sizes["pair"].tolist() == ["en-de", "de-en"]  # the study's order
    assert list(sizes.columns) == ["pair", "train (strings)", "validation (strings)", "test (strings)"]
    scores = translation_tables.scores_table(f)
    _no_float_noise(scores)
    assert scores["decoding"].tolist()[:3] == ["greedy"] * 3 and scores["pair"].tolist()[2] == "mean over pairs"
    row = scores.iloc[0]
    assert row["chrF++ pretrained (mean ± sd)"] == "21.0 ± 1.3"
    assert row["chrF++ random init (mean ± sd)"] == "9.9"  # one seed: no spread given, none invented
    assert row["seeds (pretrained / random init)"] == "3 / 1"
    head = translation_tables.headline(f)
    assert head[0] == "Translation pairs: en-de (1,234 training strings), de-en (207 training strings)."
    assert "(greedy)" in head[1] and len(head) == 2
    assert translation_tables.headline(None) == []


def test_a_study_not_run_is_one_line_not_an_error(tmp_path):
    note = report.translation_section(None, tmp_path / "translation")
    assert note == ["Translation: not run here (no results in translation/; the pipeline's `translation` step "
                    "writes them)."]
    assert report.translation_findings(tmp_path / "translation") is None
    assert report.scaling_findings(tmp_path / "scaling") is None
    assert len(report.scaling_section(tmp_path / "scaling")) == 1 and "Scaling: not run" in report.scaling_section(
        tmp_path / "scaling")[0]
    assert report.scaling_section(tmp_path / "scaling", part="steptime") == []
    assert str(tmp_path) not in note[0]  # no machine's path on the page


def test_sections_and_conclusions_name_translation_and_scaling(tmp_path):
    root = _scaling_folder(tmp_path / "scaling")
    parts = report.scaling_section(root)
    shown = [p for p in parts if isinstance(p, pd.DataFrame)]
    assert len(shown) == 5 and any("held-out proof" in p for p in parts if isinstance(p, str))
    assert not any("Step-time" in p for p in parts if isinstance(p, str))
    assert isinstance(report.scaling_section(root, part="steptime")[1], pd.DataFrame)
    tr = report.translation_section(_translation_findings())
    assert sum(isinstance(p, pd.DataFrame) for p in tr) == 2 and tr[-1].startswith("- Translation: chrF++ mean over pairs (greedy)")
    f = {"precision_verdicts": ["bf16 matches fp32"], "batch_lr_verdict": "batch 8 is best",
         "translation": _translation_findings(), "scaling": scaling_tables.findings(root)}
    groups = report.conclusions_by_study(f)
    assert list(groups) == ["Precision × ZeRO stage", "Batch × learning rate", "Translation", "Scaling"]
    assert report.conclusions(f)[-4].startswith("Scaling: fitted on ladder-1")
    path = report.save(f, pd.DataFrame({"n_gpus": [1]}), tmp_path / "report")
    assert records.read_json(path)["conclusions_by_study"][-1] == {"study": "Scaling", "conclusions": groups["Scaling"]}


def test_time_to_target_table_for_readers():
    curves = pd.DataFrame({"trial": ["a"] * 3 + ["b"] * 3, "step": [4, 8, 12] * 2, "tokens": [1280, 2560, 3840] * 2,
                           "step_seconds": [0.123456] * 6, "eval_loss": [6.0, 5.0, 4.0, 7.0, 6.5, 6.2]})
    results = pd.DataFrame({"trial": ["a", "b"], "global_batch": [16, 8], "lr": [1e-3, 3e-3], "seed": [0, 0]})
    t = report.time_to_target_table(curves, results, 5.0)
    assert list(t.columns) == ["global batch (examples)", "peak lr", "seed", "reached target", "step", "tokens (k)",
                               "training time (s)"]
    assert t["global batch (examples)"].tolist() == [8, 16]  # sorted by batch
    assert t.iloc[1]["reached target"] == "yes" and t.iloc[1]["step"] == 8 and t.iloc[1]["tokens (k)"] == 2.6
    assert t.iloc[1]["training time (s)"] == 1.0 and t.iloc[0]["step"] == "—"
    assert not any(isinstance(v, float) and math.isnan(v) for v in t.to_numpy().ravel())
    assert np.isclose(float(t.iloc[1]["peak lr"]), 1e-3)
