"""The QA study: clear errors for unusable base models, the run overrides, and (slow) the whole
smoke study through the real launcher: a tiny 'pretrained' model, fine-tuned from it and from
random init, evaluated per language."""

from __future__ import annotations

import pytest

from mt5study import config
from mt5study.paths import PARAMS
from mt5study.qa import finetune, prepare
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
    a = finetune.run_overrides(params, base, tmp_path, "pretrained")
    b = finetune.run_overrides(params, base, tmp_path, "random_init")
    assert a.pop("model.checkpoint") == "/ckpt/model" and b.pop("model.checkpoint") is None
    assert a == b and a["data.path"] == str(tmp_path.resolve()) and a["model.vocab_size"] == 1000
    for ov in (a, b):  # both are valid training params
        config.load(PARAMS / "cpu" / "qa_finetune_smoke.yaml", ov)


@pytest.mark.slow
def test_smoke_study_end_to_end(tmp_path):
    """ETL smoke -> 8 pretraining steps -> QA data -> two fine-tunes (accelerate + DeepSpeed
    ZeRO-3, 2 processes) -> greedy evaluation -> per-language EM/F1; a rerun reuses everything."""
    params = config.load(SMOKE)
    out = finetune.run(params, tmp_path / "qa")
    runs, results, predictions = out["runs"], out["results"], out["predictions"]
    assert list(runs["init"]) == ["pretrained", "random_init"]
    assert list(runs["status"]) == ["completed", "completed"], runs[["init", "status", "error"]].to_dict("records")
    assert (runs["steps"] == config.load(PARAMS / "cpu" / "qa_finetune_smoke.yaml").run.steps).all()
    langs = set(params.qa.source.languages)
    for init in ("pretrained", "random_init"):
        sub = results[results.init == init]
        assert set(sub.lang) == langs | {"all"}
        assert set(sub.normalization) == {"squad", "language-aware"}
        assert sub[["exact_match", "f1"]].apply(lambda s: s.between(0, 100)).all().all()
    from mt5study.qa.evaluate import read_examples

    n_val = len(read_examples(out["data"]))
    assert len(predictions) == 2 * n_val  # every validation question, answered or scored as ""
    assert (tmp_path / "qa" / "results.parquet").exists() and (tmp_path / "qa" / "study.json").exists()
    table = finetune.score_pivot(results)
    assert list(table.index)[-1] == "all"
    summary_times = [(tmp_path / "qa" / "runs" / i / "summary.json").stat().st_mtime for i in ("pretrained", "random_init")]
    again = finetune.run(params, tmp_path / "qa")  # finished runs and evaluations are reused
    assert [(tmp_path / "qa" / "runs" / i / "summary.json").stat().st_mtime
            for i in ("pretrained", "random_init")] == summary_times
    assert again["results"].equals(results)
