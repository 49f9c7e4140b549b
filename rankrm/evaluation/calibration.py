"""Calibration of pairwise preferences P(i > j) = sigmoid((r_i - r_j) / T), before (T = 1) and after
fitting the temperature T on held-out pairs.

The data are the valid pairs (labels strictly apart), each taken in both orders: (d, y=1) and
(-d, y=0), so the outcome is not always "the first one wins" and the reliability diagram is
symmetric about (0.5, 0.5). NLL = mean -log P(observed order) (the same for both orders), Brier =
mean (P - y)^2, ECE = expected calibration error with `bins` (even) equal-width bins on [0, 1] (binary,
confidence = P, as `torchmetrics.functional.classification.binary_calibration_error`).

Why sums instead of calling sklearn / torchmetrics here: the bootstrap re-weights lists, which
needs every quantity as per-list sums (NLL and Brier sums, and per-bin sums of P, of y and of the
count for the ECE). The tests check these against `sklearn.metrics.log_loss`,
`sklearn.metrics.brier_score_loss` and torchmetrics' `binary_calibration_error` on random data.
Fitting T: NLL is convex in w = 1/T (a one-feature logistic regression without intercept), minimised
by `scipy.optimize.minimize_scalar` over log T; the tests compare with sklearn's LogisticRegression.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import expit, log_expit

from rankrm.errors import RankrmError
from rankrm.evaluation.stats import Columns, Pairs, ratio

LOG_T_RANGE = (-12.0, 12.0)  # T in [6e-6, 1.6e5]: wide enough for raw logits of any scale


def nll(diff: np.ndarray, t: float) -> float:
    """Mean -log sigmoid(d / T) over pairs (d = r_better - r_worse)."""
    return float(-log_expit(diff / t).mean()) if len(diff) else math.nan


def fit_temperature(diff: np.ndarray) -> float:
    """T minimising the NLL of the pairs; NaN without pairs. Reward ties only (d = 0) leave T free: 1."""
    if not len(diff):
        return math.nan
    if not np.any(diff):
        return 1.0
    res = minimize_scalar(lambda lt: nll(diff, math.exp(lt)), bounds=LOG_T_RANGE, method="bounded")
    return float(math.exp(res.x))


def check_bins(bins: int) -> None:
    """An even number of bins puts 0.5 on an edge, so the two orders of a pair (P and 1 - P) never share
    a bin (with an odd number the middle bin holds both and looks calibrated whatever the model does)."""
    if bins < 2 or bins % 2:
        raise RankrmError(f"calibration bins must be an even number >= 2, got {bins}")


def bin_index(p: np.ndarray, bins: int) -> np.ndarray:
    """torchmetrics' binning: bucketize(p, linspace(0, 1, bins + 1), right=True) - 1 (p = 1 gets bin `bins`)."""
    return np.searchsorted(np.linspace(0, 1, bins + 1), p, side="right") - 1


def add_columns(cols: Columns, pairs: Pairs, t: float, tag: str, bins: int) -> None:
    """Per-list sums for NLL, Brier and ECE at temperature `t`, both orders of every pair."""
    z = pairs.diff / t
    p = expit(z)  # P(better > worse); the reversed order has P = 1 - p and y = 0
    cols.add_pairs(f"{tag}/nll", pairs, -log_expit(z))
    cols.add_pairs(f"{tag}/brier", pairs, (1 - p) ** 2)  # (p - 1)^2 = ((1 - p) - 0)^2: same for both orders
    fwd, rev = bin_index(p, bins), bin_index(1 - p, bins)
    for b in range(bins + 1):
        f, r = fwd == b, rev == b
        cols.add_pairs(f"{tag}/n{b}", pairs, f.astype(float) + r)
        cols.add_pairs(f"{tag}/conf{b}", pairs, np.where(f, p, 0.0) + np.where(r, 1 - p, 0.0))
        cols.add_pairs(f"{tag}/acc{b}", pairs, f.astype(float))  # y = 1 only in the forward order


def headlines(t: dict[str, np.ndarray], tag: str, bins: int, n_pairs: np.ndarray) -> dict[str, np.ndarray]:
    """NLL, Brier, ECE from column totals (any leading shape)."""
    gap = sum(np.abs(t[f"{tag}/conf{b}"] - t[f"{tag}/acc{b}"]) for b in range(bins + 1))
    return {
        f"nll_{tag}": ratio(t[f"{tag}/nll"], n_pairs),
        f"brier_{tag}": ratio(t[f"{tag}/brier"], n_pairs),
        f"ece_{tag}": ratio(gap, 2 * n_pairs),
    }


def reliability(t: dict[str, np.ndarray], tag: str, bins: int) -> list[dict[str, float]]:
    """Reliability diagram points: per non-empty bin, its range, count, mean P and observed frequency."""
    out = []
    for b in range(bins + 1):
        n = float(t[f"{tag}/n{b}"])
        if n:
            lo, hi = b / bins, min((b + 1) / bins, 1.0)
            out.append({"lo": lo, "hi": hi, "n": n, "conf": t[f"{tag}/conf{b}"] / n, "freq": t[f"{tag}/acc{b}"] / n})
    return out
