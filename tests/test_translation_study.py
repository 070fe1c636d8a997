"""The translation study: params validated with named errors, runs that differ only in their
start and seed, per-pair tables with mean ± sd over seeds, and (slow) the smoke study end to end
through the real launcher."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from mt5study import config, records
from mt5study.paths import PARAMS
from mt5study.translation import finetune
from mt5study.translation.config import TranslationParams, parse_pair

FILES = sorted(PARAMS.rglob("translation*.yaml"))
SMOKE = PARAMS / "cpu" / "translation_smoke.yaml"


def doc(**tr) -> dict:
    return {"translation": {"name": "t", "pairs": ["en-de"], "tokenizer": "outputs/etl",
                            "sources": [{"kind": "catalogs"}],
                            "finetune": {"params": "params/cpu/qa_finetune_smoke.yaml", "checkpoint": "ckpt"}, **tr}}


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_every_translation_file_loads_with_valid_runs(path, tmp_path):
    params = config.load(path, schema=TranslationParams)
    assert config.validate(config.to_dict(params), str(path), TranslationParams) == params
    base = {"checkpoint": "/ckpt", "tokenizer": "/tok", "vocab_size": 1000}
    for init in finetune.INITS:
        for seed in params.translation.finetune.seeds:
            ov = finetune.run_overrides(params, base, tmp_path, init, seed)
            config.load(PARAMS.parent / params.translation.finetune.params, ov)
    if params.translation.pretrain:
        config.load(PARAMS.parent / params.translation.pretrain.train_params, params.translation.pretrain.overrides)


@pytest.mark.parametrize("change, match", [
    ({"pairs": ["en-xx"]}, r"pairs: .*unknown language \['xx'\]"),
    ({"pairs": ["en-en"]}, "source and target are the same language"),
    ({"pairs": ["english-german"]}, "unknown language"),
    ({"pairs": ["en-de", "en-de"]}, "pairs repeat"),
    ({"pairs": []}, "pairs"),
    ({"sources": [{"kind": "catalog"}]}, "sources.0"),
    ({"sources": [{"kind": "hub", "dataset": "wmt/wmt19", "path": "x.jsonl"}]}, "exactly one of"),
    ({"tokenizer": None}, "or set translation.pretrain"),
    ({"splits": {"validation_fraction": 0.4, "test_fraction": 0.45}}, "leave under 20%"),
    ({"filters": {"max_token_ratio": 0.5}}, "filters.max_token_ratio"),
])
def test_bad_params_name_the_key(change, match):
    with pytest.raises(config.ConfigError, match=match):
        config.validate(doc(**change), "translation.yaml", TranslationParams)


def test_parse_pair():
    assert parse_pair("de-en") == ("de", "en")


def test_runs_differ_only_in_start_and_seed(tmp_path):
    params = config.load(SMOKE, schema=TranslationParams)
    base = {"checkpoint": "/ckpt/model", "tokenizer": "/tok", "vocab_size": 1000}
    a = finetune.run_overrides(params, base, tmp_path, "pretrained", 0)
    b = finetune.run_overrides(params, base, tmp_path, "random_init", 1)
    assert a.pop("model.checkpoint") == "/ckpt/model" and b.pop("model.checkpoint") is None
    assert a.pop("run.seed") == 0 and b.pop("run.seed") == 1
    assert a == b and a["data.input_length"] == params.translation.input_length


def fake_results() -> pd.DataFrame:
    rows = []
    for init, level in (("pretrained", 30.0), ("random_init", 20.0)):
        for seed in (0, 1, 2):
            for pair, shift in (("en-de", 0.0), ("en-ja", 4.0)):
                rows.append({"init": init, "seed": seed, "pair": pair, "decoding": "greedy", "segments": 10,
                             "bleu": level / 3 + seed, "chrf": level + shift + seed, "bleu_tokenize": "13a",
                             "bleu_signature": "s", "chrf_signature": "c"})
    return pd.DataFrame(rows)


def test_per_pair_table_and_verdict():
    results = fake_results()
    table = finetune.per_pair_table(results)
    mean = table[table.pair == "mean over pairs"].set_index("init")
    assert mean.loc["pretrained", "chrf_mean"] == 33.0 and mean.loc["random_init", "chrf_mean"] == 23.0
    assert mean.loc["pretrained", "chrf_sd"] == 1.0 and (mean["seeds"] == 3).all()
    de = table[(table.pair == "en-de") & (table.init == "pretrained")].iloc[0]
    assert de["chrf_mean"] == 31.0 and de["chrf_sd"] == 1.0
    v = finetune.verdict(results)
    assert v["difference"] == 10.0 and v["spread"] == 1.0 and v["pretrained_beats_random_by_more_than_spread"]
    assert "pretrained 33.0 ± 1.0 (n=3)" in finetune.verdict_text(v)
    assert v["sentence"].startswith("the pretrained start is better than random initialisation on chrF++ mean over "
                                    "pairs (greedy) by 10.0") and "paired t-interval over seeds" in v["sentence"]
    close = results.assign(chrf=results.chrf.where(results.init == "pretrained", results.chrf + 9.5))
    assert not finetune.verdict(close)["pretrained_beats_random_by_more_than_spread"]  # 0.5 < sd 1.0
    one = results[results.seed == 0]
    assert not finetune.verdict(one)["pretrained_beats_random_by_more_than_spread"]  # one seed: no spread
    assert "no verdict" in finetune.verdict(one)["sentence"]
    assert finetune.verdict(results, "beam4") == {"decoding": "beam4", "comparison": "no completed runs"}


def test_report_findings_for_notebook_05(tmp_path):
    """What the report reads from a finished study folder; None where the step was not run."""
    assert finetune.report_findings(tmp_path / "none") is None
    study, data = tmp_path / "study", tmp_path / "study" / "data" / "abc"
    data.mkdir(parents=True)
    fake_results().to_parquet(study / "results.parquet", index=False)
    counts = {p: {"read": 10, "kept": 8, "train_examples": 6, "validation_examples": 1, "test_examples": 1}
              for p in ("en-de", "en-ja")}
    records.write_json_atomic(data / "manifest.json", {"pairs": ["en-de", "en-ja"], "counts": counts,
                                                       "sampling": {"shares": {"en-de": 0.5, "en-ja": 0.5}}})
    records.write_json_atomic(study / "study.json", {"data": str(data), "wall_seconds": {"total": 12.5}})
    f = finetune.report_findings(study)
    assert f["pairs"] == ["en-de", "en-ja"] and f["wall_seconds"] == {"total": 12.5}
    assert f["sizes"]["en-ja"] == {"train": 6, "validation": 1, "test": 1}
    json.dumps(f)  # report.save writes it into report.json
    assert {"pair": "mean over pairs", "decoding": "greedy", "init": "pretrained", "chrf_mean": 33.0} \
        .items() <= next(r for r in f["table"] if r["pair"] == "mean over pairs" and r["init"] == "pretrained").items()
    assert f["verdict"]["pretrained_beats_random_by_more_than_spread"]
    assert f["sentences"][0].startswith("Translation: chrF++ mean over pairs (greedy): pretrained 33.0")


def test_too_few_examples_for_a_micro_batch_is_named(tmp_path):
    params = config.load(SMOKE, schema=TranslationParams)
    records.write_json_atomic(tmp_path / "manifest.json", {"num_examples": {"train": 400, "validation": 3}})
    train = config.load(PARAMS.parent / params.translation.finetune.params, schema=config.TrainParams)
    with pytest.raises(ValueError, match=r"split sizes \{'validation': 3\} are below one micro-batch"):
        finetune.check_fits(params, tmp_path, train)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    """ETL smoke -> 8 pretraining steps -> catalog pairs -> fine-tuning from both starts
    (accelerate + DeepSpeed ZeRO-3, 2 processes) -> greedy and beam translations -> BLEU/chrF++."""
    params = config.load(SMOKE, schema=TranslationParams)
    out = finetune.run(params, tmp_path / "tr")
    runs, results = out["runs"], out["results"]
    assert list(runs["status"]) == ["completed", "completed"], runs[["init", "status", "error"]].to_dict("records")
    assert set(results["pair"]) == set(params.translation.pairs)
    assert set(results["decoding"]) == {"greedy", f"beam{params.translation.eval.num_beams}"}
    assert results[["bleu", "chrf"]].apply(lambda s: s.between(0, 100)).all().all()
    assert (results["bleu_signature"].str.contains("version:")).all()
    assert results.loc[results.pair == "en-ja", "bleu_tokenize"].iloc[0] in ("ja-mecab", "char")
    assert (tmp_path / "tr" / "study.json").exists()
    table = finetune.report_table(tmp_path / "tr")
    assert "mean over pairs" in set(table["pair"])
    assert finetune.report_verdict(tmp_path / "tr").startswith("chrF++ mean over pairs (greedy): pretrained")
