"""Seeded percentile bootstrap helpers shared by the statistics.

Method: the plain percentile bootstrap (Efron): resample with replacement, recompute the
statistic, and take the 2.5th and 97.5th percentiles of the replicates for a 95% interval.
It is used rather than BCa because BCa's jackknife acceleration is undefined on the
all-0/all-1 columns that accuracy data often has. Document resampling draws multinomial
counts per document, which equals resampling document indices but lets replicates of
phrasing means be one matrix product.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator

import numpy as np

#: Replicates per bootstrap unless a caller asks otherwise (tests pass small numbers).
DEFAULT_BOOT = 2000
#: Bound on the replicate x document weight block held in memory at once.
_CHUNK_CELLS = 2_000_000


def make_rng(seed: int, *keys: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and stable names (e.g. the task id).

    Keying by name keeps one task's intervals the same whatever other tasks are in the report.
    """
    return np.random.default_rng([seed, *(zlib.crc32(k.encode("utf-8")) for k in keys)])


def percentile_ci(replicates: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """The (low, high) percentile interval of bootstrap replicates; NaNs are ignored."""
    values = np.asarray(replicates, dtype=float)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return (math.nan, math.nan)
    alpha = (1.0 - level) / 2.0
    low, high = np.percentile(values, [100 * alpha, 100 * (1 - alpha)])
    return (float(low), float(high))


def document_count_chunks(rng: np.random.Generator, n_docs: int, n_boot: int) -> Iterator[np.ndarray]:
    """Blocks of bootstrap draw counts over documents, each row summing to ``n_docs``.

    Yields arrays of whole numbers (as floats) of shape (block, n_docs); all blocks together hold ``n_boot`` rows.
    Drawing indices and counting them is the plain resampling, and several times faster than
    ``Generator.multinomial``.
    """
    block = max(1, min(n_boot, _CHUNK_CELLS // max(n_docs, 1)))
    done = 0
    while done < n_boot:
        size = min(block, n_boot - done)
        draws = rng.integers(0, n_docs, size=(size, n_docs))
        # Offset each replicate's draws into its own range so one bincount counts them all.
        offsets = (np.arange(size) * n_docs)[:, None]
        # As floats, so the matrix products downstream run in BLAS.
        yield np.bincount((draws + offsets).ravel(), minlength=size * n_docs).reshape(size, n_docs).astype(float)
        done += size


def resampled_row_means(matrix: np.ndarray, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Row means of ``matrix`` (phrasings x documents) under document resampling.

    Returns an array (n_boot, rows): replicate b holds every row's mean over the same
    resampled documents, so phrasings stay paired within a replicate.
    """
    rows, docs = matrix.shape
    if docs == 0:
        return np.full((n_boot, rows), math.nan)
    # Integer counts times scores, divided once: a constant matrix gives exactly constant means.
    parts = [(counts @ matrix.T) / docs for counts in document_count_chunks(rng, docs, n_boot)]
    return np.vstack(parts)


def bootstrap_mean_ci(values: np.ndarray, rng: np.random.Generator, n_boot: int = DEFAULT_BOOT, level: float = 0.95) -> tuple[float, float]:
    """Percentile CI of a mean over documents; NaN with fewer than two documents."""
    values = np.asarray(values, dtype=float)
    n = values.size
    if n < 2:
        return (math.nan, math.nan)
    if np.all((values == 0.0) | (values == 1.0)):
        # The mean of n draws with replacement from 0/1 values is Binomial(n, mean) / n:
        # the same bootstrap distribution, drawn in O(n_boot) instead of O(n_boot * n).
        return percentile_ci(rng.binomial(n, values.mean(), size=n_boot) / n, level)
    return percentile_ci(resampled_row_means(values[None, :], rng, n_boot)[:, 0], level)
