"""scripts/encoder_start.py: the pretrained encoder with a fresh decoder, and its refusals."""

from __future__ import annotations

import importlib.util

import torch

from mt5study.model import build, load_checkpoint
from mt5study.paths import ROOT


def _script():
    spec = importlib.util.spec_from_file_location("encoder_start", ROOT / "scripts" / "encoder_start.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_keeps_the_encoder_and_embedding_and_redraws_the_rest(tmp_path):
    torch.manual_seed(1)
    trained = build("tiny", vocab_size=300)
    with torch.no_grad():  # a "pretrained" model: every weight moved away from any init
        for p in trained.parameters():
            p.add_(0.5)
    trained.save_pretrained(tmp_path / "pre")
    out = _script().encoder_start(tmp_path / "pre", tmp_path / "mixed", seed=0)
    mixed = dict(load_checkpoint(out).named_parameters())
    before = dict(trained.named_parameters())
    torch.manual_seed(0)
    fresh = dict(build("tiny", vocab_size=300).named_parameters())  # the same T5X draw, same seed
    kept = [n for n in mixed if n.startswith("encoder.") or n == "shared.weight"]
    redrawn = [n for n in mixed if n not in kept]
    assert kept and any(n.startswith("decoder.") for n in redrawn) and "lm_head.weight" in redrawn
    for n in kept:
        assert torch.equal(mixed[n], before[n]), n
    for n in redrawn:
        assert not torch.equal(mixed[n], before[n]), n
        assert torch.equal(mixed[n], fresh[n]), n


def test_refuses_bad_params_and_a_missing_study_by_name(tmp_path, capsys):
    mod = _script()
    bad = tmp_path / "bad.yaml"
    bad.write_text("translation:\n  pairs: [en-de]\n  nonsense: 1\n")
    assert mod.main(["--params", str(bad), "--study", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "nonsense" in capsys.readouterr().err
    assert mod.main(["--params", "params/cpu/translation_smoke.yaml", "--study", str(tmp_path / "none"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "no results.parquet" in capsys.readouterr().err


def test_refuses_a_study_run_with_other_params(tmp_path, capsys):
    """The three starts are compared only if the study's two were fine-tuned as this one will be."""
    import json

    import pandas as pd

    from mt5study.config import load, to_dict
    from mt5study.translation.config import TranslationParams

    mod = _script()
    params = to_dict(load(ROOT / "params/cpu/translation_smoke.yaml", schema=TranslationParams))
    params["translation"]["finetune"]["overrides"]["run.steps"] = 12345  # the study ran longer
    (tmp_path / "study").mkdir()
    for name in ("results.parquet", "runs.parquet"):
        pd.DataFrame({"x": [1]}).to_parquet(tmp_path / "study" / name)
    (tmp_path / "study" / "study.json").write_text(json.dumps({"params": params}))
    assert mod.main(["--params", "params/cpu/translation_smoke.yaml", "--study", str(tmp_path / "study"),
                     "--out", str(tmp_path / "o")]) == 2
    assert "other translation.finetune.overrides" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()  # nothing started
