"""Runs named by their inputs' contents: data, tokenizer, checkpoint and code fingerprints, and
the reasons a recorded run no longer matches (records.run_inputs, records.stale_reasons)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mt5study import config, records
from mt5study.paths import PARAMS


def _tiny(**overrides):
    return config.load(PARAMS / "cpu" / "tiny.yaml", overrides or None)


def _fake_etl(folder: Path, train_sha: str = "a" * 64) -> Path:
    """An ETL output's provenance-bearing parts: manifest content hashes and a tokenizer folder."""
    (folder / "tokenizer").mkdir(parents=True)
    (folder / "tokenizer" / "spiece.model").write_bytes(b"pieces v1")
    (folder / "manifest.json").write_text(json.dumps(
        {"format": "mt5study-etl/1", "content_sha256": {"train": train_sha, "validation": "b" * 64, "clean": {}}}))
    return folder


def _package_copy(tmp_path: Path) -> Path:
    pkg = tmp_path / "pkg"
    shutil.copytree(records.PACKAGE, pkg, ignore=shutil.ignore_patterns("__pycache__"))
    return pkg


def test_code_fingerprint_follows_code_not_comments_and_only_its_kind(tmp_path):
    pkg = _package_copy(tmp_path)
    train0, etl0 = records.code_fingerprint("train", pkg), records.code_fingerprint("etl", pkg)
    assert set(train0["files"]) >= {"train.py", "model.py", "batches.py", "optim.py", "config.py"}
    assert train0["libraries"]["torch"]
    optim = pkg / "optim.py"
    optim.write_text(optim.read_text() + "\n# a comment only\n")
    assert records.code_fingerprint("train", pkg)["sha256"] == train0["sha256"]  # comments don't count
    optim.write_text(optim.read_text() + "\nSCALE = 2.0\n")
    train1 = records.code_fingerprint("train", pkg)
    assert train1["sha256"] != train0["sha256"]
    assert records.code_fingerprint("etl", pkg)["sha256"] == etl0["sha256"]  # the ETL's code did not change
    reasons = records.inputs_changes({"format": records.INPUTS_FORMAT, "data": {}, "checkpoint": None, "code": train0},
                                     {"format": records.INPUTS_FORMAT, "data": {}, "checkpoint": None, "code": train1})
    assert len(reasons) == 1 and reasons[0].startswith("code changed: optim.py")
    (pkg / "loss.py").unlink(missing_ok=True)
    before = records.code_fingerprint("train", pkg)
    (pkg / "loss.py").write_text("Z = 1\n")  # a new module on the training path counts
    assert "loss.py (new)" in records.inputs_changes(
        {"format": records.INPUTS_FORMAT, "code": before}, {"format": records.INPUTS_FORMAT,
                                                            "code": records.code_fingerprint("train", pkg)})[0]
    with pytest.raises(ValueError, match="unknown kind"):
        records.code_fingerprint("nope", pkg)


def test_docstring_edits_do_not_count_but_a_syntax_error_does(tmp_path):
    f = tmp_path / "m.py"
    f.write_text('"""Doc."""\ndef f():\n    """Doc."""\n    return 1\n')
    a = records.source_sha256(f)
    f.write_text('"""Other doc."""\n\ndef f():\n    """Other."""\n    return 1  # same code\n')
    assert records.source_sha256(f) == a
    f.write_text('def f(:\n')
    assert records.source_sha256(f) != a


def test_etl_data_and_tokenizer_are_named_by_content(tmp_path):
    etl = _fake_etl(tmp_path / "etl")
    p = _tiny(**{"data.path": str(etl)})
    a = records.run_inputs(p, tmp_path / "run")
    assert a["data"]["kind"] == "etl" and a["data"]["tokenizer_sha256"] and a["checkpoint"] is None
    json.dumps(a)  # JSON-able
    (etl / "tokenizer" / "spiece.model").write_bytes(b"pieces v2")
    b = records.run_inputs(p)
    assert records.inputs_changes(a, b) == [
        f"tokenizer changed: sha {a['data']['tokenizer_sha256'][:10]} -> {b['data']['tokenizer_sha256'][:10]}"]
    manifest = json.loads((etl / "manifest.json").read_text())
    manifest["content_sha256"]["train"] = "c" * 64
    (etl / "manifest.json").write_text(json.dumps(manifest))
    c = records.run_inputs(p)
    assert records.inputs_changes(b, c) == [f"data changed: manifest sha {b['data']['sha256'][:10]} -> {c['data']['sha256'][:10]}"]
    assert records.inputs_changes(c, records.run_inputs(p)) == []


def test_synthetic_data_by_its_parameters():
    a = records.run_inputs(_tiny())["data"]
    assert a["kind"] == "synthetic" and a["synthetic"]["num_train"] > 0
    assert records.run_inputs(_tiny(**{"data.synthetic.num_train": 64}))["data"]["sha256"] != a["sha256"]


def test_checkpoint_hashed_by_its_weight_bytes(tmp_path):
    ck = tmp_path / "model"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    (ck / "model.safetensors").write_bytes(b"\x00" * 1000)
    p = _tiny(**{"model.checkpoint": str(ck)})
    a = records.run_inputs(p)
    assert set(a["checkpoint"]["files"]) == {"config.json", "model.safetensors"}
    assert records.inputs_changes(a, records.run_inputs(p)) == []
    (ck / "model.safetensors").write_bytes(b"\x01" + b"\x00" * 999)  # same size, new bytes
    b = records.run_inputs(p)
    assert records.inputs_changes(a, b) == [f"checkpoint changed: sha {a['checkpoint']['sha256'][:10]} -> "
                                            f"{b['checkpoint']['sha256'][:10]}"]


def test_missing_inputs_are_named_errors(tmp_path):
    with pytest.raises(records.InputsError, match=r"data.path=.*no manifest.json"):
        records.run_inputs(_tiny(**{"data.path": str(tmp_path / "gone")}))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "manifest.json").write_text("{torn")
    with pytest.raises(records.InputsError, match="manifest.json unreadable"):
        records.run_inputs(_tiny(**{"data.path": str(tmp_path / "bad")}))
    with pytest.raises(records.InputsError, match="not a folder"):
        records.run_inputs(_tiny(**{"model.checkpoint": str(tmp_path / "no_model")}))
    (tmp_path / "empty").mkdir()
    with pytest.raises(records.InputsError, match="no weight files"):
        records.run_inputs(_tiny(**{"model.checkpoint": str(tmp_path / "empty")}))


def test_stale_reasons_of_a_run_folder(tmp_path):
    p = _tiny()
    cfg, inputs = config.to_dict(p), records.run_inputs(p)
    out = tmp_path / "run"
    assert records.stale_reasons(out, cfg, inputs)[0].startswith("config.json missing")
    records.write_json_atomic(out / "config.json", cfg)
    assert records.stale_reasons(out, cfg, inputs) == ["no inputs.json: the run was recorded before runs named their inputs"]
    records.write_json_atomic(out / "inputs.json", inputs)
    assert records.stale_reasons(out, cfg, inputs) == []
    cfg2 = config.to_dict(_tiny(**{"optim.lr": 0.5}))
    assert records.stale_reasons(out, cfg2, inputs) == [f"params changed: optim.lr {p.optim.lr!r} -> 0.5"]
    (out / "inputs.json").write_text("{torn")
    assert records.stale_reasons(out, cfg, inputs)[0].startswith("inputs.json unreadable")


# ----------------------------------------------------------------------------- the runner's reuse
# The trainer is replaced by a stand-in that writes what train.py writes (config.json,
# inputs.json, summary.json last), so each scenario runs in milliseconds; the real launches are
# covered by test_studies and test_pipeline.

@pytest.fixture
def trainer(monkeypatch):
    """A recording stand-in for launch.run: the folders it (re)trained, in order."""
    from mt5study.studies import runner

    trained: list[str] = []

    def fake_run(base_path, out, overrides=None, extra_args=(), check=False):
        params = config.load(base_path, overrides or None)
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        records.write_json_atomic(out / "config.json", config.to_dict(params))
        records.write_json_atomic(out / "env.json", {"hardware": {"cpu": "Test CPU", "cpu_count": 2, "gpus": []}})
        records.write_json_atomic(out / "inputs.json", records.run_inputs(params, out))
        records.write_json_atomic(out / "summary.json", {"status": "completed", "steps": params.run.steps})
        trained.append(out.name)
        return {"status": "completed"}

    monkeypatch.setattr(runner.launch, "run", fake_run)
    return trained


def test_exactly_the_runs_whose_inputs_changed_are_retrained(tmp_path, trainer, monkeypatch, capsys):
    from mt5study.studies import runner

    etl = _fake_etl(tmp_path / "etl")
    ck = tmp_path / "ckpt"
    ck.mkdir()
    (ck / "config.json").write_text("{}")
    (ck / "model.safetensors").write_bytes(b"w1")
    tiny = PARAMS / "cpu" / "tiny.yaml"
    runs = {"on_etl": {"data.path": str(etl)}, "from_ckpt": {"model.checkpoint": str(ck)}, "plain": {}}

    def study(**kw):
        trainer.clear()
        for name, ov in runs.items():
            runner.run_trial(tmp_path / "runs" / name, tiny, ov, **kw)
        return sorted(trainer)

    assert study() == ["from_ckpt", "on_etl", "plain"]
    assert study() == []  # everything matches: all reused
    assert "params, data, checkpoint and code match" in capsys.readouterr().out

    manifest = json.loads((etl / "manifest.json").read_text())
    manifest["content_sha256"]["train"] = "d" * 64  # the ETL output changed
    (etl / "manifest.json").write_text(json.dumps(manifest))
    assert study() == ["on_etl"]
    assert "data changed: manifest sha" in capsys.readouterr().out

    (etl / "tokenizer" / "spiece.model").write_bytes(b"pieces v9")
    assert study() == ["on_etl"]
    assert "tokenizer changed" in capsys.readouterr().out

    (ck / "model.safetensors").write_bytes(b"w2")
    assert study() == ["from_ckpt"]
    assert "checkpoint changed" in capsys.readouterr().out

    pkg = _package_copy(tmp_path)  # an edit to the ETL's code: no training run depends on it
    (pkg / "data" / "clean.py").write_text((pkg / "data" / "clean.py").read_text() + "\nX = 1\n")
    monkeypatch.setattr(records, "PACKAGE", pkg)
    assert study() == []
    (pkg / "optim.py").write_text((pkg / "optim.py").read_text() + "\nSCALE = 2.0\n")  # a trainer source: every run
    reasons = [json.loads((tmp_path / "runs" / n / "reuse.json").read_text()) for n in runs]
    assert study() == ["from_ckpt", "on_etl", "plain"]
    out = capsys.readouterr().out
    assert out.count("code changed: optim.py (fingerprint") == 3
    assert all(r["action"] == "reused" for r in reasons)
    assert json.loads((tmp_path / "runs" / "plain" / "reuse.json").read_text())["action"] == "trained"


def test_keep_stale_reuses_on_purpose_and_the_table_says_so(tmp_path, trainer, monkeypatch, capsys):
    from mt5study.studies import runner

    tiny = PARAMS / "cpu" / "tiny.yaml"
    out = tmp_path / "grid" / "trials" / "only"
    runner.run_trial(out, tiny, {})
    (out / "inputs.json").unlink()  # a folder written before runs named their inputs
    trainer.clear()
    runner.run_trial(out, tiny, {}, keep_stale=True)
    assert trainer == [] and "KEPT STALE on request: no inputs.json" in capsys.readouterr().out
    row = runner.results_table(tmp_path / "grid", []).iloc[0]
    assert row.stale.startswith("no inputs.json") and row.code == "?" and row.machine == "Test x2"
    assert records.provenance_note(tmp_path / "grid").startswith("!!! STALE RESULTS KEPT ON PURPOSE")
    runner.run_trial(out, tiny, {})  # without the flag: retrained, and the mark goes
    assert trainer == ["only"] and "[rerun]" in capsys.readouterr().out
    row = runner.results_table(tmp_path / "grid", []).iloc[0]
    assert row.stale == "" and row.code == records.code_fingerprint("train")["sha256"][:10]
    assert row.data == records.run_inputs(config.load(tiny))["data"]["sha256"][:10] + " (synthetic)"


def test_unhashable_inputs_rerun_and_never_match(tmp_path, trainer, capsys):
    from mt5study.studies import runner

    tiny = PARAMS / "cpu" / "tiny.yaml"
    etl = _fake_etl(tmp_path / "etl")
    out = tmp_path / "run"
    runner.run_trial(out, tiny, {"data.path": str(etl)})
    (etl / "manifest.json").unlink()  # the recorded data no longer exists
    trainer.clear()
    with pytest.raises(records.InputsError, match="no manifest.json"):  # a finished run: a named error
        runner.run_trial(out, tiny, {"data.path": str(etl)})
    assert records.read_json(out / "summary.json")["status"] == "completed"  # the folder is untouched
    runner.run_trial(out, tiny, {"data.path": str(etl)}, keep_stale=True)  # kept only when asked, and marked
    assert records.stale_mark(out).startswith("inputs cannot be named") and trainer == []
    fresh = runner.run_trial(tmp_path / "new", tiny, {"model.checkpoint": str(tmp_path / "gone")})
    assert fresh["status"] == "failed" and "InputsError" in fresh["error"] and "gone" in fresh["error"]
    assert trainer == []  # nothing launched for a run that cannot name its inputs


def test_last_error_names_the_rank_exception_not_the_launcher():
    from mt5study.studies import runner

    log = ("[rank0]: Traceback (most recent call last):\n[rank0]: ValueError: checkpoint /x: bad\n"
           "torch.distributed.elastic.multiprocessing.errors.ChildFailedError:\n")
    assert runner._last_error(log) == "ValueError: checkpoint /x: bad"


def test_an_etl_output_names_the_data_sha_its_training_runs_record(tmp_path):
    etl = _fake_etl(tmp_path / "etl")
    manifest = json.loads((etl / "manifest.json").read_text())
    manifest.update(inputs={"code": records.code_fingerprint("etl")},
                    environment={"hardware": {"cpu": "AMD EPYC 7763 64-Core Processor", "cpu_count": 2}})
    (etl / "manifest.json").write_text(json.dumps(manifest))
    run = records.run_inputs(_tiny(**{"data.path": str(etl)}))
    p = records.provenance(etl)
    assert p["data"] == run["data"]["sha256"][:10] and p["code"] == records.code_fingerprint("etl")["sha256"][:10]
    assert p["machine"] == "AMD EPYC 7763 x2" and p["run"] and not p["stale"]
