"""The QA study: clear errors for unusable base models, the run overrides, and (slow) the whole
smoke study through the real launcher: a tiny 'pretrained' model, fine-tuned from it and from
random init, evaluated per language."""

from __future__ import annotations

import pandas as pd
import pytest

from mt5study import config
from mt5study.paths import PARAMS
from mt5study.qa import figures, finetune, prepare
from mt5study.qa.config import QAParams

SMOKE = PARAMS / "cpu" / "qa_smoke.yaml"


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> str:
    from mt5study.data.tokenizer import save_t5_tokenizer, train_sentencepiece

    work = tmp_path_factory.mktemp("ft_tok")
    (work / "t.txt").write_text("what does the option do? list the entries of a directory\n" * 200, encoding="utf-8")
    model = train_sentencepiece(work / "t.txt", work / "sp", pieces=300, num_threads=1)
    save_t5_tokenizer(model, work / "tokenizer", extra_ids=20)
    return str(work / "tokenizer")


def qa_doc(**qa) -> dict:
    return {"qa": {"name": "t", "finetune": {"params": "params/cpu/qa_finetune_smoke.yaml"}, **qa}}


def test_base_model_is_named_or_built():
    with pytest.raises(config.ConfigError, match="or set qa.pretrain"):
        config.validate(qa_doc(), "x", QAParams)
    both = qa_doc(tokenizer="outputs/etl", pretrain={"etl_params": "a.yaml", "train_params": "b.yaml"})
    with pytest.raises(config.ConfigError, match="leave qa.tokenizer"):
        config.validate(both, "x", QAParams)
    ok = qa_doc(tokenizer="outputs/etl")
    ok["qa"]["finetune"]["checkpoint"] = "outputs/pretrain/model"
    assert config.validate(ok, "x", QAParams).qa.finetune.checkpoint == "outputs/pretrain/model"


@pytest.mark.parametrize("path", sorted(PARAMS.rglob("qa*.yaml")), ids=lambda p: p.name)
def test_every_qa_file_names_loadable_training_params(path, tmp_path):
    params = config.load(path)
    if not isinstance(params, QAParams):
        return  # a fine-tuning TrainParams file (loaded by test_config)
    base = {"checkpoint": "/ckpt", "tokenizer": "/tok", "vocab_size": 1000}
    for init in finetune.INITS:  # what each fine-tuning launch will validate
        config.load(PARAMS.parent / params.qa.finetune.params, finetune.run_overrides(params, base, tmp_path, init))
    if params.qa.pretrain:
        config.load(PARAMS.parent / params.qa.pretrain.etl_params)
        config.load(PARAMS.parent / params.qa.pretrain.train_params, params.qa.pretrain.overrides)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(finetune.BaseModelError, match="does not exist"):
        finetune._local_or_hub("outputs/no_such_run/model", "checkpoint")
    with pytest.raises(finetune.BaseModelError, match="does not exist"):
        finetune._local_or_hub(str(tmp_path / "model"), "checkpoint")
    assert finetune._local_or_hub("google/mt5-small", "checkpoint") == "google/mt5-small"


def test_checkpoint_must_match_tokenizer_and_preset(tmp_path, tokenizer):
    from mt5study.model import build

    train = config.load(PARAMS / "cpu" / "qa_finetune_smoke.yaml")  # preset tiny
    size = prepare.Tokenizer(tokenizer).size
    build("tiny", vocab_size=size).save_pretrained(tmp_path / "ok")
    assert finetune.check_base(str(tmp_path / "ok"), tokenizer, train) == size
    build("tiny", vocab_size=size + 500).save_pretrained(tmp_path / "other_vocab")
    with pytest.raises(finetune.BaseModelError, match=f"vocabulary of {size + 500} but the tokenizer"):
        finetune.check_base(str(tmp_path / "other_vocab"), tokenizer, train)
    build("tiny", vocab_size=size - 10).save_pretrained(tmp_path / "smaller")
    with pytest.raises(finetune.BaseModelError, match="not the tokenizer it was pretrained with"):
        finetune.check_base(str(tmp_path / "smaller"), tokenizer, train)
    mini = config.load(PARAMS / "cpu" / "qa_finetune.yaml")  # preset mini
    with pytest.raises(finetune.BaseModelError, match="not the preset 'mini'"):
        finetune.check_base(str(tmp_path / "ok"), tokenizer, mini)
    with pytest.raises(finetune.BaseModelError, match="no config.json"):
        finetune.check_base(str(tmp_path), tokenizer, train)


def test_the_two_runs_differ_only_in_their_start(tmp_path):
    params = config.load(SMOKE)
    base = {"checkpoint": "/ckpt/model", "tokenizer": "/tok", "vocab_size": 1000}
    a = finetune.run_overrides(params, base, tmp_path, "pretrained", seed=1)
    b = finetune.run_overrides(params, base, tmp_path, "random_init", seed=1)
    assert a.pop("model.checkpoint") == "/ckpt/model" and b.pop("model.checkpoint") is None
    assert a == b and a["data.path"] == str(tmp_path.resolve()) and a["model.vocab_size"] == 1000
    assert a["run.seed"] == 1
    for ov in (a, b):  # both are valid training params
        config.load(PARAMS / "cpu" / "qa_finetune_smoke.yaml", ov)


def test_seeds_are_distinct_and_the_default_study_has_three():
    doc = qa_doc(tokenizer="outputs/etl")
    doc["qa"]["finetune"].update(checkpoint="outputs/pretrain/model", seeds=[0, 0])
    with pytest.raises(config.ConfigError, match="repeated"):
        config.validate(doc, "x", QAParams)
    doc["qa"]["finetune"]["seeds"] = []
    with pytest.raises(config.ConfigError, match="seeds"):
        config.validate(doc, "x", QAParams)
    assert len(config.load(PARAMS / "cpu" / "qa.yaml").qa.finetune.seeds) >= 3


def _results(f1: dict[str, list[float]], em: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for init in f1:
        for seed, (f, e) in enumerate(zip(f1[init], em[init])):
            for lang, shift in (("de", -1.0), ("en", 1.0)):
                rows.append({"init": init, "seed": seed, "lang": lang, "normalization": "language-aware",
                             "rules": "mlqa", "questions": 10, "exact_match": e + shift, "f1": f + shift})
            rows.append({"init": init, "seed": seed, "lang": "all", "normalization": "language-aware",
                         "rules": "mean over languages", "questions": 20, "exact_match": e, "f1": f})
    return pd.DataFrame(rows)


def test_table_gives_mean_sd_and_n_per_language():
    r = _results({"pretrained": [40.0, 42.0, 44.0], "random_init": [10.0, 11.0, 12.0]},
                 {"pretrained": [20.0, 21.0, 22.0], "random_init": [1.0, 2.0, 3.0]})
    table = finetune.score_pivot(r)
    assert list(table.index) == ["de", "en", "all"]
    assert table.loc["all", "pretrained F1"] == "42.0 ± 2.0" and table.loc["en", "random init EM"] == "3.0 ± 1.0"
    assert table.loc["all", "pretrained n"] == 3 and table.loc["de", "questions"] == 10
    text = figures.verdict(r)
    assert "the pretrained start is better than random initialisation on F1" in text
    assert "by 31.0" in text and "paired t-interval over seeds" in text


def test_one_seed_gives_no_spread_and_no_verdict():
    r = _results({"pretrained": [40.0], "random_init": [10.0]}, {"pretrained": [20.0], "random_init": [1.0]})
    assert finetune.score_pivot(r).loc["all", "pretrained F1"] == "40.0 (no spread)"
    assert "no spread can be given, so no verdict" in figures.verdict(r)


def test_within_noise_is_said():
    r = _results({"pretrained": [10.0, 14.0, 12.0], "random_init": [11.0, 13.0, 12.5]},
                 {"pretrained": [1.0, 2.0, 3.0], "random_init": [2.0, 1.0, 3.0]})
    assert "matches random initialisation within noise on F1" in figures.verdict(r)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    """ETL smoke -> 8 pretraining steps -> QA data -> fine-tunes from both starts, 2 seeds each
    (accelerate + DeepSpeed ZeRO-3, 2 processes) -> greedy evaluation -> per-language EM/F1 with
    their spread over seeds; a rerun reuses everything."""
    params = config.load(SMOKE)
    seeds = params.qa.finetune.seeds
    out = finetune.run(params, tmp_path / "qa")
    runs, results, predictions = out["runs"], out["results"], out["predictions"]
    assert list(zip(runs["init"], runs["seed"])) == [(i, s) for i in ("pretrained", "random_init") for s in seeds]
    assert set(runs["status"]) == {"completed"}, runs[["init", "seed", "status", "error"]].to_dict("records")
    assert (runs["steps"] == config.load(PARAMS / "cpu" / "qa_finetune_smoke.yaml").run.steps).all()
    a, b = (runs[runs.init == "random_init"].sort_values("seed")["final_train_loss"]).tolist()
    assert a != b  # the seed changes the run (initialisation and data order)
    langs = set(params.qa.source.languages)
    for init in ("pretrained", "random_init"):
        sub = results[results.init == init]
        assert set(sub.lang) == langs | {"all"} and set(sub.seed) == set(seeds)
        assert set(sub.normalization) == {"squad", "language-aware"}
        assert sub[["exact_match", "f1"]].apply(lambda s: s.between(0, 100)).all().all()
    from mt5study.qa.evaluate import read_examples

    n_val = len(read_examples(out["data"]))
    assert len(predictions) == 2 * len(seeds) * n_val  # every validation question, answered or scored as ""
    assert (tmp_path / "qa" / "results.parquet").exists() and (tmp_path / "qa" / "study.json").exists()
    table = finetune.score_pivot(results)
    assert list(table.index)[-1] == "all" and (table["pretrained n"] == len(seeds)).all()
    assert "paired t-interval over seeds" in figures.verdict(results)
    folders = [tmp_path / "qa" / "runs" / i / f"seed{s}" / "summary.json" for i in finetune.INITS for s in seeds]
    summary_times = [f.stat().st_mtime for f in folders]
    again = finetune.run(params, tmp_path / "qa")  # finished runs and evaluations are reused
    assert [f.stat().st_mtime for f in folders] == summary_times
    assert again["results"].equals(results)
