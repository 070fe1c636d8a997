"""T5's span-corruption objective, vectorised with NumPy.

Arithmetic (Raffel et al. 2020, t5.data.preprocessors `random_spans_helper`,
`random_spans_noise_mask`, `noise_span_to_unique_sentinel`; written anew here): a chunk of
`raw` tokens has round(raw * density) noise tokens in round(noise / mean_span) spans; the
sequence alternates non-noise and noise spans, starting with non-noise. Inputs keep the
non-noise tokens with one sentinel per noise span; targets hold each noise span after its
sentinel; both end with EOS. Example, sentinels X0, X1:

    tokens   a b [c d] e f g [h]        inputs   a b X0 e f g X1 EOS
                                        targets  X0 c d X1 h EOS
"""

from __future__ import annotations

import math
import numbers

import numpy as np


def _check_int(name: str, value, low: int) -> int:
    """An integer argument (a bool or a float is refused, not truncated) at least `low`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < low:
        raise ValueError(f"{name} must be at least {low}, got {value}")
    return int(value)


def _check_noise(noise_density, mean_noise_span_length) -> None:
    """T5's noise arguments: a density strictly inside (0, 1), a mean span length of at least 1.

    A density of 0 is refused rather than rounded up to one noise token: asking for no noise and
    getting some is a quiet wrong answer."""
    for name, v in (("noise_density", noise_density), ("mean_noise_span_length", mean_noise_span_length)):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v):
            raise ValueError(f"{name} must be a finite number, got {v!r}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise ValueError(f"mean_noise_span_length must be at least 1, got {mean_noise_span_length}")


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a chunk: T5's rounding, at least one of each, and at
    least one non-noise token, so the mask and the length arithmetic always agree."""
    num_noise = int(round(length * noise_density))  # round half to even, like T5
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
    # Every span needs a noise token and a non-noise token before it: a short chunk at a density
    # near 0.5 (3 tokens, 2 noise, mean span 1) would otherwise ask for 2 spans of 1 non-noise token.
    num_spans = min(num_spans, num_noise, length - num_noise)
    return num_noise, num_spans


def _corrupted_lengths(raw: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    noise, spans = _noise_counts(raw, noise_density, mean_noise_span_length)
    # inputs: non-noise tokens + one sentinel per span + EOS; targets: noise + sentinels + EOS
    return raw - noise + spans + 1, noise + spans + 1


def span_corruption_lengths(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(raw tokens per chunk, targets length) so that corrupted inputs have `inputs_length`
    tokens including EOS: the longest chunk that fits (T5: 512 -> (568, 114))."""
    inputs_length = _check_int("inputs_length", inputs_length, 3)  # a token, a sentinel, EOS
    _check_noise(noise_density, mean_noise_span_length)
    # Inputs grow by 0, 1 or 2 per raw token and never exceed raw + 1 (spans <= noise), so
    # inputs_length - 1 raw tokens always fit: walk up from there.
    raw = inputs_length - 1
    while _corrupted_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    _, targets = _corrupted_lengths(raw, noise_density, mean_noise_span_length)
    if noise_density == 0.5 and targets > inputs_length:
        # T5's adjustment: at density 0.5 keep targets no longer than inputs.
        raw -= 1
        targets -= 1
    return raw, targets


def _random_segmentation(num_items: int, num_segments: int, rng: np.random.Generator, batch: int) -> np.ndarray:
    """(batch, num_segments) positive lengths summing to num_items, uniformly over all
    compositions: num_segments - 1 distinct cut points among the num_items - 1 gaps."""
    if not 1 <= num_segments <= num_items:
        raise ValueError(f"cannot cut {num_items} tokens into {num_segments} non-empty spans")
    if num_segments == 1:
        return np.full((batch, 1), num_items, dtype=np.int64)
    keys = rng.random((batch, num_items - 1))
    cuts = np.argpartition(keys, num_segments - 2, axis=1)[:, : num_segments - 1] + 1
    cuts.sort(axis=1)
    bounds = np.concatenate(
        [np.zeros((batch, 1), np.int64), cuts, np.full((batch, 1), num_items, np.int64)], axis=1
    )
    return np.diff(bounds, axis=1)


def _span_lengths(length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator,
                  batch: int) -> np.ndarray:
    """(batch, 2 * spans) lengths [non-noise 0, noise 0, non-noise 1, noise 1, ...] per row."""
    length = _check_int("length", length, 2)  # a noise and a non-noise token
    batch = _check_int("batch", batch, 1)
    _check_noise(noise_density, mean_noise_span_length)
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng, batch)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng, batch)
    return np.stack([nonnoise_lengths, noise_lengths], axis=2).reshape(batch, 2 * num_spans)


def _mask_from_lengths(lengths: np.ndarray) -> np.ndarray:
    batch, parts = lengths.shape
    flags = np.tile(np.array([False, True]), batch * parts // 2)  # non-noise, noise, ...
    return np.repeat(flags, lengths.ravel()).reshape(batch, -1)


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator, batch: int = 1
) -> np.ndarray:
    """Boolean (batch, length) noise masks: alternating non-noise/noise spans, non-noise first."""
    return _mask_from_lengths(_span_lengths(length, noise_density, mean_noise_span_length, rng, batch))


def span_corrupt_batch(
    tokens: np.ndarray,
    noise_density: float,
    mean_noise_span_length: float,
    sentinel_ids,
    rng: np.random.Generator,
    eos_id: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupt a (batch, raw) array of chunks: int32 (inputs, targets), EOS appended."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 2:
        raise ValueError(f"tokens must be 2-D (batch, raw length), got shape {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        raise TypeError(f"tokens must be integer ids, got dtype {tokens.dtype}")  # int32 would truncate
    batch, length = tokens.shape
    if batch == 0:
        raise ValueError("tokens has no rows (batch 0)")
    _check_int("length", length, 2)
    _check_noise(noise_density, mean_noise_span_length)
    sentinels = np.asarray(sentinel_ids, dtype=np.int32)
    num_spans = _noise_counts(length, noise_density, mean_noise_span_length)[1] if length >= 2 else 0
    if num_spans > len(sentinels):
        raise ValueError(f"{num_spans} noise spans need {num_spans} sentinels, got {len(sentinels)}")
    lengths = _span_lengths(length, noise_density, mean_noise_span_length, rng, batch)
    noise = _mask_from_lengths(lengths)
    starts = np.cumsum(lengths, axis=1) - lengths  # (batch, 2 * spans): where each span begins
    rows = np.repeat(np.arange(batch), num_spans)
    span_sentinels = np.tile(sentinels[:num_spans], batch)
    eos = np.full((batch, 1), eos_id, dtype=np.int32)
    out = []
    # Inputs: non-noise tokens, each noise span's first token replaced by its sentinel, the rest
    # of the span dropped. Targets: the same with the roles swapped (non-noise span k -> sentinel k).
    for keep, span_starts in ((~noise, starts[:, 1::2]), (noise, starts[:, 0::2])):
        values = tokens.astype(np.int32, copy=True)
        values[rows, span_starts.ravel()] = span_sentinels
        keep[rows, span_starts.ravel()] = True
        out.append(np.concatenate([values[keep].reshape(batch, -1), eos], axis=1))  # equal counts per row
    return out[0], out[1]


def span_corrupt(
    tokens,
    noise_density: float,
    mean_noise_span_length: float,
    sentinel_ids,
    rng: np.random.Generator,
    eos_id: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Span-corrupt one 1-D token array: (inputs, targets) as int32, each ending with EOS."""
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {tokens.shape}")
    inputs, targets = span_corrupt_batch(tokens[None, :], noise_density, mean_noise_span_length, sentinel_ids, rng, eos_id)
    return inputs[0], targets[0]


def pack(tokens: np.ndarray, raw_length: int) -> np.ndarray:
    """Cut a token stream (documents joined with EOS) into (n, raw_length) chunks, dropping
    the last partial chunk so that no example needs padding."""
    raw_length = _check_int("raw_length", raw_length, 1)
    n = len(tokens) // raw_length
    return np.asarray(tokens[: n * raw_length]).reshape(n, raw_length)


def pad_to(rows: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Right-pad (batch, k) to (batch, length) with pad_id (a no-op at T5's lengths)."""
    length = _check_int("length", length, 0)
    if np.ndim(rows) != 2:
        raise ValueError(f"rows must be 2-D (batch, k), got shape {np.shape(rows)}")
    if rows.shape[1] > length:
        raise ValueError(f"rows of {rows.shape[1]} tokens do not fit length {length}")
    if rows.shape[1] == length:
        return rows
    return np.pad(rows, ((0, 0), (0, length - rows.shape[1])), constant_values=pad_id)
