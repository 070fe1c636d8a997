"""The memory model refuses arguments that would give a quiet wrong answer, naming the argument."""
import pytest
from mt5study import memory


@pytest.mark.parametrize("value", ["no", "yes", 0, 1, None])
def test_activation_checkpointing_must_be_a_bool(value):
    with pytest.raises(ValueError, match="activation_checkpointing"):
        memory.activation_bytes("tiny", "bf16", 1, 32, 8, value)


@pytest.mark.parametrize("gib", [0, -40, float("nan"), float("inf")])
def test_fits_table_refuses_a_gpu_size_that_is_not_positive(gib):
    with pytest.raises(ValueError, match="gpu_gib"):
        memory.fits_table("tiny", gpu_gib=(gib,), n_gpus=(1,), micro_batches=(1,))


@pytest.mark.parametrize("name", ["zero_stage", "precision", "n_gpus"])
def test_estimate_names_a_missing_argument(name):
    args = dict(preset="tiny", zero_stage=3, precision="bf16", n_gpus=2, micro_batch=1, input_length=32, target_length=8)
    args[name] = None
    with pytest.raises(ValueError, match=name):
        memory.estimate(**args)
