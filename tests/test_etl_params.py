"""Every ETL params file loads, and says what its comments say."""

import pytest

from mt5study.config import ConfigError, load
from mt5study.data import span_corruption_lengths
from mt5study.data.config import ETLParams
from mt5study.paths import PARAMS

FILES = ["cpu/etl.yaml", "cpu/etl_smoke.yaml", "cpu/etl_sharded.yaml", "cpu/etl_sharded_smoke.yaml", "gpu/etl_mc4.yaml"]


@pytest.mark.parametrize("name", FILES)
def test_loads(name):
    params = load(PARAMS / name)
    assert isinstance(params, ETLParams)


def test_cpu_default_is_the_manual_pages_with_an_8000_vocabulary():
    etl = load(PARAMS / "cpu" / "etl.yaml").etl
    assert etl.source.kind == "manpages" and etl.source.languages is None
    assert etl.tokenizer.vocab_size == 8000 and etl.tokenizer.pretrained is None
    assert span_corruption_lengths(etl.corruption.inputs_length) == (70, 14)


def test_mc4_example_uses_mt5_lengths_and_tokenizer():
    etl = load(PARAMS / "gpu" / "etl_mc4.yaml").etl
    assert etl.source.kind == "mc4" and len(etl.source.languages) == 107
    assert len([lang for lang in etl.source.languages if not lang.endswith("-Latn")]) == 101
    assert "no" in etl.source.languages  # YAML 1.1 would read a bare no as False
    assert etl.tokenizer.pretrained == "google/mt5-xxl"
    assert span_corruption_lengths(etl.corruption.inputs_length) == (1137, 229)
    assert etl.engine.executor == "slurm" and etl.engine.tasks >= 4 and "{lang}" in etl.source.mc4.data_files


def test_sharded_params_keep_the_inline_runs_data_settings():
    """etl_sharded*.yaml differ from etl*.yaml in the engine section (and num_proc) only."""
    for inline, sharded in (("etl.yaml", "etl_sharded.yaml"), ("etl_smoke.yaml", "etl_sharded_smoke.yaml")):
        a, b = (load(PARAMS / "cpu" / f).etl.model_dump() for f in (inline, sharded))
        assert b["engine"]["executor"] == "local" and a["engine"]["executor"] == "inline"
        for key in ("source", "cleaning", "sampling", "tokenizer", "corruption", "seed"):
            assert a[key] == b[key], (sharded, key)


@pytest.mark.parametrize("override,match", [
    ({"etl.sampling.alpha": 1.5}, "alpha"),
    ({"etl.source.kind": "files"}, "source.files"),
    ({"etl.tokenizer.vocab_size": 350}, "vocab_size"),
    ({"etl.cleaning.min_chars": "200"}, "min_chars"),
    ({"etl.corruption.noise_density": 1.0}, "noise_density"),
    ({"etl.tokenizer.vocab": 8000}, "vocab"),
])
def test_bad_values_are_refused_naming_the_key(override, match):
    with pytest.raises(ConfigError, match=match):
        load(PARAMS / "cpu" / "etl.yaml", override)


def test_mc4_needs_languages():
    with pytest.raises(ConfigError, match="source.languages"):
        load(PARAMS / "cpu" / "etl.yaml", {"etl.source.kind": "mc4"})
