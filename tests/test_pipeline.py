"""The default study's pipeline params, and the CLI's refusal of bad ETL targets."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from mt5study import config, pipeline, records
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


def test_pipeline_outputs_folder_and_step_folders(tmp_path):
    assert pipeline._resolved("outputs/etl", tmp_path) == str(tmp_path / "etl")
    p = config.load(PARAMS / "cpu" / "pipeline_smoke.yaml")
    steps = {s.name: s for s in p.pipeline.steps}
    (tmp_path / "precision").mkdir()
    assert pipeline.step_folders(steps["report"], tmp_path) == [tmp_path / "report", tmp_path / "precision"]
    assert not p.pipeline.keep_stale and not p.pipeline.allow_mixed


def test_decisions_count_what_a_step_trained_and_reused(tmp_path):
    records.record_decision(tmp_path / "s" / "old", "trained", ["no run yet"])
    since = "2999-01-01T00:00:00+00:00"  # nothing after this: an earlier run's records do not count
    assert pipeline.decisions([tmp_path / "s"], since) == {"trained": [], "reused": 0, "kept_stale": []}
    records.record_decision(tmp_path / "s" / "a", "trained", ["data changed: manifest sha 1 -> 2"])
    records.record_decision(tmp_path / "s" / "b", "reused", [])
    records.record_decision(tmp_path / "s" / "c", "kept stale", ["code changed: loss.py"])
    d = pipeline.decisions([tmp_path / "s", tmp_path / "absent"], "2000-01-01T00:00:00+00:00")
    assert [t["folder"].rsplit("/", 1)[1] for t in d["trained"]] == ["a", "old"]
    assert d["reused"] == 1 and d["kept_stale"][0]["reasons"] == ["code changed: loss.py"]


@pytest.mark.slow
def test_an_etl_change_retrains_exactly_the_step_that_reads_it(tmp_path, capsys):
    """A real ETL output and two real training steps: only the one on the ETL data reruns."""
    from mt5study.data import etl

    etl_params = PARAMS / "cpu" / "etl_smoke.yaml"
    small = {"etl.source.languages": ["de", "en", "fr"], "etl.source.max_docs_per_language": 4, "etl.tokenizer.vocab_size": 600,
             "etl.output.max_train_examples": 64, "etl.output.max_validation_examples": 16}
    etl.run_or_reuse(config.load(etl_params, small), tmp_path / "etl")
    doc = {"pipeline": {"steps": [
        {"name": "on_etl", "kind": "train", "params": "params/cpu/tiny.yaml",
         "overrides": {"data.path": "outputs/etl", "data.input_length": 64, "data.target_length": 14,
                       "run.steps": 2, "run.eval_every": 0, "run.checkpoint_every": 0}},
        {"name": "synthetic", "kind": "train", "params": "params/cpu/tiny.yaml",
         "overrides": {"run.steps": 2, "run.eval_every": 0, "run.checkpoint_every": 0}}]}}
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(doc))
    params = config.load(path)
    first = pipeline.run(params, outputs=tmp_path)
    assert [len(s["trained"]) for s in first] == [1, 1]
    again = pipeline.run(params, outputs=tmp_path)
    assert [(len(s["trained"]), s["reused"]) for s in again] == [(0, 1), (0, 1)]

    capsys.readouterr()
    changed = config.load(etl_params, {**small, "etl.seed": 1})  # another sample: other data
    etl.run_or_reuse(changed, tmp_path / "etl")
    assert "params changed: etl.seed 0 -> 1" in capsys.readouterr().out
    after = pipeline.run(params, outputs=tmp_path)
    assert len(after[0]["trained"]) == 1
    assert after[0]["trained"][0]["reasons"][0].startswith("data changed: manifest sha")
    # The synthetic step is reused; only a concurrent edit of the trainer's sources (a shared
    # working tree) may retrain it, and then for that reason alone, never for the data.
    assert after[1]["reused"] == 1 or all(r.startswith("code changed") for t in after[1]["trained"] for r in t["reasons"])
    assert records.read_json(tmp_path / "pipeline.json")["steps"][0]["trained"]


def test_study_cli_takes_keep_stale_and_an_outputs_folder(tmp_path):
    from mt5study import cli

    a = cli.build_parser().parse_args(["study", "--keep-stale", "--outputs", str(tmp_path)])
    assert a.keep_stale and a.outputs == str(tmp_path)
    assert not cli.build_parser().parse_args(["study"]).keep_stale
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"pipeline": {"keep_stale": "yes", "steps": [{"name": "s", "kind": "site"}]}}))
    with pytest.raises(ConfigError, match="pipeline.keep_stale"):
        config.load(bad)


def test_the_report_reads_every_study_after_it_ran(tmp_path):
    """Both pipelines hand notebook 05 the translation and scaling folders (parameters it declares),
    and a step cannot read the folder of a step that runs after it."""
    import papermill

    for name in ("pipeline.yaml", "pipeline_smoke.yaml"):
        p = config.load(PARAMS / "cpu" / name)
        order = [s.name for s in p.pipeline.steps]
        report = p.pipeline.steps[order.index("report")]
        assert report.parameters["translation_dir"] == "outputs/translation"
        assert report.parameters["scaling_dir"] == "outputs/scaling"
        assert order.index("translation") < order.index("report") and order.index("scaling") < order.index("report")
        assert set(report.parameters) <= set(papermill.inspect_notebook(str(NOTEBOOKS / report.notebook)))
        for folder in ("translation", "scaling"):
            (tmp_path / folder).mkdir(exist_ok=True)
        assert pipeline.step_folders(report, tmp_path) == [tmp_path / "report", tmp_path / "translation",
                                                           tmp_path / "scaling"]
    bad = tmp_path / "p.yaml"
    bad.write_text(yaml.safe_dump({"pipeline": {"steps": [
        {"name": "report", "notebook": "05_report.ipynb", "parameters": {"scaling_dir": "outputs/scaling"}},
        {"name": "scaling", "notebook": "06_scaling.ipynb", "params": "params/cpu/scaling_smoke.yaml"}]}}))
    with pytest.raises(ConfigError, match="parameters.scaling_dir reads outputs/scaling, written by the later step 'scaling'"):
        config.load(bad)


def test_progress_lines_reach_the_console_as_the_kernel_prints_them():
    import io

    from mt5study.pipeline import ProgressEcho

    out = io.StringIO()
    echo = ProgressEcho(out, prefix="> ")
    # papermill hands over stream chunks, not lines: a line may arrive in pieces
    echo.write("   size  parameters\nladder-1  28000\n[batch_lr] trial 3/27 global_")
    assert out.getvalue() == ""
    echo.write("batch=16__lr=0.002, about 4 min left\n[scaling_smoke] size 2/4 ladder-2: 1726 tokens\nwarning: x\n")
    assert out.getvalue().splitlines() == ["> [batch_lr] trial 3/27 global_batch=16__lr=0.002, about 4 min left",
                                           "> [scaling_smoke] size 2/4 ladder-2: 1726 tokens"]
