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
    (pkg / "loss.py").write_text("Z = 1\n")  # a new module on the training path counts
    assert "loss.py (new)" in records.inputs_changes(
        {"format": records.INPUTS_FORMAT, "code": train1}, {"format": records.INPUTS_FORMAT,
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
