"""T5 span corruption: length arithmetic, noise masks, input/target layout."""

import numpy as np
import pytest

from mt5study.data import span_corrupt, span_corrupt_batch, span_corruption_lengths
from mt5study.data.corruption import pack, random_spans_noise_mask

SENTINELS = list(range(32099, 31999, -1))  # <extra_id_0> = 32099, as in T5's 32100-token vocabulary
EOS = 1


def test_lengths_match_t5_published_values():
    # T5 / nanoT5: inputs 512 at density 0.15, mean span 3 -> 568 raw tokens, 114 targets.
    assert span_corruption_lengths(512, 0.15, 3.0) == (568, 114)
    # Worked by hand: raw 1137 -> round(170.55) = 171 noise, 57 spans -> inputs 1137-171+57+1 = 1024,
    # targets 171+57+1 = 229; raw 1138 -> 171 noise, 57 spans -> 1025 inputs, too long.
    assert span_corruption_lengths(1024, 0.15, 3.0) == (1137, 229)
    assert span_corruption_lengths(1024) == span_corruption_lengths(1024, 0.15, 3.0)  # the defaults


def _reference_lengths(inputs_length, density, mean):
    """Exhaustive search written independently: the largest raw length whose corrupted input
    (non-noise + one sentinel per span + EOS) fits."""
    best = None
    for raw in range(2, 3 * inputs_length):
        noise = min(max(int(round(raw * density)), 1), raw - 1)
        spans = max(int(round(noise / mean)), 1)
        if raw - noise + spans + 1 <= inputs_length:
            best = (raw, noise + spans + 1)
    return best


@pytest.mark.parametrize("inputs_length", [8, 16, 33, 64, 100, 128, 256, 777])
@pytest.mark.parametrize("density,mean", [(0.15, 3.0), (0.3, 2.0), (0.5, 8.0)])
def test_lengths_are_the_longest_chunk_that_fits(inputs_length, density, mean):
    raw, targets = span_corruption_lengths(inputs_length, density, mean)
    ref = _reference_lengths(inputs_length, density, mean)
    if density == 0.5 and ref[1] > inputs_length:  # T5's 0.5 adjustment
        ref = (ref[0] - 1, ref[1] - 1)
    assert (raw, targets) == ref


@pytest.mark.parametrize("bad", [dict(inputs_length=2), dict(inputs_length=64, noise_density=0.0),
                                 dict(inputs_length=64, noise_density=1.0),
                                 dict(inputs_length=64, mean_noise_span_length=0.5)])
def test_lengths_refuse_bad_arguments(bad):
    with pytest.raises(ValueError):
        span_corruption_lengths(**bad)


def _reference_layout(tokens, mask, sentinels, eos):
    """Plain-Python T5 layout from a given noise mask (the code under test is vectorised)."""
    inputs, targets, span = [], [], -1
    for i, (t, noisy) in enumerate(zip(tokens, mask)):
        new_span = i == 0 or noisy != mask[i - 1]
        if noisy:
            if new_span:
                span += 1
                inputs.append(sentinels[span])
            targets.append(t)
        else:
            if new_span:
                targets.append(sentinels[span + 1])
            inputs.append(t)
    return inputs + [eos], targets + [eos]


def test_layout_matches_plain_python_reference():
    raw, targets_len = span_corruption_lengths(64)
    tokens = np.arange(1000, 1000 + raw * 50).reshape(50, raw)
    # Same generator state for the mask and for span_corrupt_batch, which draws the mask first.
    masks = random_spans_noise_mask(raw, 0.15, 3.0, np.random.default_rng(7), batch=50)
    inputs, targets = span_corrupt_batch(tokens, 0.15, 3.0, SENTINELS, np.random.default_rng(7), EOS)
    assert inputs.shape == (50, 64) and targets.shape == (50, targets_len)
    assert inputs.dtype == np.int32 and targets.dtype == np.int32
    for row in range(50):
        ref_in, ref_tg = _reference_layout(tokens[row].tolist(), masks[row].tolist(), SENTINELS, EOS)
        assert inputs[row].tolist() == ref_in
        assert targets[row].tolist() == ref_tg


def test_hand_checked_example():
    # 10 tokens: round(1.5) = 2 noise tokens (half to even), round(2/3) = 1 span. With one
    # span the sequence is [non-noise 8][noise 2]: the layout is fixed whatever the draw.
    tokens = np.array([11, 12, 13, 14, 15, 16, 17, 18, 19, 20])
    inputs, targets = span_corrupt(tokens, 0.15, 3.0, [99, 98], np.random.default_rng(0), eos_id=1)
    assert inputs.tolist() == [11, 12, 13, 14, 15, 16, 17, 18, 99, 1]
    assert targets.tolist() == [99, 19, 20, 1]


def test_noise_mask_properties():
    length = 568
    masks = random_spans_noise_mask(length, 0.15, 3.0, np.random.default_rng(1), batch=400)
    assert masks.shape == (400, length)
    assert (masks.sum(axis=1) == 85).all()  # round(568 * 0.15) = 85 noise tokens in every row
    assert not masks[:, 0].any() and masks[:, -1].all()  # starts with non-noise, ends with noise
    starts = masks[:, 1:] & ~masks[:, :-1]
    assert (starts.sum(axis=1) == 28).all()  # round(85 / 3) = 28 spans
    # Spans are placed at random: every position is noise in some row, none in all rows.
    frac = masks.mean(axis=0)
    assert 0 < frac[1:-1].min() and frac[:-1].max() < 1
    assert abs(frac.mean() - 85 / 568) < 1e-9


def test_span_lengths_average_the_mean():
    masks = random_spans_noise_mask(1137, 0.15, 3.0, np.random.default_rng(2), batch=200)
    spans = (masks[:, 1:] & ~masks[:, :-1]).sum()
    assert masks.sum() / spans == pytest.approx(171 / 57)


def test_sentinel_order_and_reconstruction():
    rng = np.random.default_rng(3)
    for length in [5, 17, 70, 568]:
        tokens = rng.integers(3, 30000, size=length)
        inputs, targets = span_corrupt(tokens, 0.15, 3.0, SENTINELS, rng, EOS)
        assert inputs[-1] == EOS and targets[-1] == EOS
        in_sent = [t for t in inputs if t in SENTINELS]
        tg_sent = [t for t in targets if t in SENTINELS]
        assert in_sent == SENTINELS[: len(in_sent)]  # <extra_id_0>, <extra_id_1>, ... in order
        assert tg_sent == in_sent
        # Interleave back: each input sentinel is replaced by the target tokens after it.
        spans, current = {}, None
        for t in targets[:-1]:
            if t in SENTINELS:
                current = t
                spans[current] = []
            else:
                spans[current].append(t)
        rebuilt = []
        for t in inputs[:-1]:
            rebuilt.extend(spans[t] if t in SENTINELS else [t])
        assert rebuilt == tokens.tolist()


def test_deterministic_for_a_seed_and_varies_across_seeds():
    tokens = np.arange(5000, 5000 + 70 * 20).reshape(20, 70)
    a = span_corrupt_batch(tokens, 0.15, 3.0, SENTINELS, np.random.default_rng(42))
    b = span_corrupt_batch(tokens, 0.15, 3.0, SENTINELS, np.random.default_rng(42))
    c = span_corrupt_batch(tokens, 0.15, 3.0, SENTINELS, np.random.default_rng(43))
    assert all((x == y).all() for x, y in zip(a, b))
    assert not (a[0] == c[0]).all()


def test_too_few_sentinels_and_bad_shapes():
    with pytest.raises(ValueError, match="sentinels"):
        span_corrupt(np.arange(568), 0.15, 3.0, SENTINELS[:5], np.random.default_rng(0))
    with pytest.raises(ValueError):
        span_corrupt(np.arange(10).reshape(2, 5), 0.15, 3.0, SENTINELS, np.random.default_rng(0))
    with pytest.raises(ValueError):
        span_corrupt(np.arange(1), 0.15, 3.0, SENTINELS, np.random.default_rng(0))


def test_pack_drops_only_the_last_partial_chunk():
    stream = np.arange(23)
    chunks = pack(stream, 5)
    assert chunks.shape == (4, 5) and chunks.ravel().tolist() == list(range(20))
