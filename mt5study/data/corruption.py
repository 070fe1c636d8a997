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

import numpy as np


def _noise_counts(length: int, noise_density: float, mean_noise_span_length: float) -> tuple[int, int]:
    """(noise tokens, noise spans) of a chunk: T5's rounding, at least one of each, and at
    least one non-noise token, so the mask and the length arithmetic always agree."""
    num_noise = int(round(length * noise_density))  # round half to even, like T5
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(int(round(num_noise / mean_noise_span_length)), 1)
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
    if inputs_length < 3:
        raise ValueError(f"inputs_length must be at least 3 (a token, a sentinel, EOS), got {inputs_length}")
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1.0:
        raise ValueError(f"mean_noise_span_length must be at least 1, got {mean_noise_span_length}")
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


def random_spans_noise_mask(
    length: int, noise_density: float, mean_noise_span_length: float, rng: np.random.Generator, batch: int = 1
) -> np.ndarray:
    """Boolean (batch, length) noise masks: alternating non-noise/noise spans, non-noise first."""
    if length < 2:
        raise ValueError(f"span corruption needs at least 2 tokens, got {length}")
    num_noise, num_spans = _noise_counts(length, noise_density, mean_noise_span_length)
    noise_lengths = _random_segmentation(num_noise, num_spans, rng, batch)
    nonnoise_lengths = _random_segmentation(length - num_noise, num_spans, rng, batch)
    interleaved = np.stack([nonnoise_lengths, noise_lengths], axis=2).reshape(batch, 2 * num_spans)
    starts = np.cumsum(interleaved, axis=1)[:, :-1]  # where spans 1 .. 2*num_spans-1 begin
    indicator = np.zeros((batch, length), dtype=np.int8)
    indicator[np.repeat(np.arange(batch), starts.shape[1]), starts.ravel()] = 1
    return np.cumsum(indicator, axis=1) % 2 == 1  # odd-numbered spans are noise


def _spans_to_sentinels(tokens: np.ndarray, span_mask: np.ndarray, sentinels: np.ndarray) -> np.ndarray:
    """Replace each run of `span_mask` by one sentinel (the k-th run by sentinels[k])."""
    prev = np.zeros_like(span_mask)
    prev[:, 1:] = span_mask[:, :-1]
    first = span_mask & ~prev
    span_index = np.maximum(np.cumsum(first, axis=1) - 1, 0)
    out = np.where(first, sentinels[span_index], tokens)
    keep = ~(span_mask & prev)  # later tokens of a run are dropped
    return out[keep].reshape(tokens.shape[0], -1)  # every row keeps the same count


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
    batch, length = tokens.shape
    sentinels = np.asarray(sentinel_ids, dtype=np.int64)
    _, num_spans = _noise_counts(length, noise_density, mean_noise_span_length) if length >= 2 else (0, 0)
    if num_spans > len(sentinels):
        raise ValueError(f"{num_spans} noise spans need {num_spans} sentinels, got {len(sentinels)}")
    mask = random_spans_noise_mask(length, noise_density, mean_noise_span_length, rng, batch)
    eos = np.full((batch, 1), eos_id, dtype=np.int32)
    inputs = _spans_to_sentinels(tokens, mask, sentinels)
    targets = _spans_to_sentinels(tokens, ~mask, sentinels)
    return (np.concatenate([inputs.astype(np.int32), eos], axis=1),
            np.concatenate([targets.astype(np.int32), eos], axis=1))


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
    n = len(tokens) // raw_length
    return np.asarray(tokens[: n * raw_length]).reshape(n, raw_length)


def pad_to(rows: np.ndarray, length: int, pad_id: int) -> np.ndarray:
    """Right-pad (batch, k) to (batch, length) with pad_id (a no-op at T5's lengths)."""
    if rows.shape[1] > length:
        raise ValueError(f"rows of {rows.shape[1]} tokens do not fit length {length}")
    if rows.shape[1] == length:
        return rows
    return np.pad(rows, ((0, 0), (0, length - rows.shape[1])), constant_values=pad_id)
