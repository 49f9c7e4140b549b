"""Percentile bootstrap intervals that resample whole lists (or clusters of lists), seeded.

A replicate draws, within each stratum of m clusters, m clusters with replacement; its multinomial
counts become per-list weights (a list weighs what its cluster was drawn), and every additive
statistic of the replicate is `weights @ per-list sums`. That is the same as rebuilding the resampled
data set and recomputing (the tests do exactly that with the same draws), for one matrix product per
chunk of replicates. Written here rather than with `scipy.stats.bootstrap` because that resamples
the observations of one sample, with no strata and no clusters: RewardBench sections weight subsets
by fixed counts (so subsets are strata), and a RewardBench 2 Ties prompt's "ref" and "tied" rows
belong together (a cluster).

Time O(n_boot x n_lists x columns); memory one chunk of weights, at most ~2e7 floats (160 MB).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

Headlines = Callable[[dict[str, np.ndarray], np.ndarray], dict[str, np.ndarray]]  # (totals, weights) -> values


def weight_chunks(
    clusters: np.ndarray, strata: np.ndarray, n_boot: int, seed: int, max_cells: int = 20_000_000
) -> Iterator[np.ndarray]:
    """(c, n) per-list weights for successive chunks of `n_boot` replicates in all (c rows each)."""
    n = len(clusters)
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_boot, max_cells // max(n, 1)))
    # per stratum: its clusters (sorted ids) and, for each list, the index of its cluster among them
    groups = []
    for s in np.unique(strata):
        rows = np.nonzero(strata == s)[0]
        ids, member = np.unique(clusters[rows], return_inverse=True)
        groups.append((rows, len(ids), member))
    done = 0
    while done < n_boot:
        c = min(chunk, n_boot - done)
        w = np.zeros((c, n))
        for rows, m, member in groups:
            counts = rng.multinomial(m, np.full(m, 1.0 / m), size=c)  # (c, m): draws of each cluster
            w[:, rows] = counts[:, member]
        done += c
        yield w


def intervals(
    matrix: np.ndarray,
    names: dict[str, int],
    headlines: Headlines,
    clusters: np.ndarray,
    strata: np.ndarray,
    n_boot: int,
    seed: int,
) -> dict[str, list[float] | None]:
    """95% percentile interval of every headline; None where no replicate defines it."""
    draws: dict[str, list[np.ndarray]] = {}
    for w in weight_chunks(clusters, strata, n_boot, seed):
        totals = w @ matrix  # (c, C)
        values = headlines({k: totals[:, i] for k, i in names.items()}, w)
        for k, v in values.items():
            draws.setdefault(k, []).append(np.broadcast_to(np.asarray(v, dtype=float), (len(w),)))
    out: dict[str, Any] = {}
    for k, parts in draws.items():
        v = np.concatenate(parts)
        v = v[~np.isnan(v)]
        out[k] = [float(x) for x in np.percentile(v, [2.5, 97.5])] if len(v) else None
    return out
