"""Losses that optimise NDCG itself: ApproxNDCG, NeuralNDCG and LambdaLoss's NDCG-Loss2 / NDCG-Loss2++.

Gains (`gain`): "linear" = `rankrm.pairs.linear_gain` (labels minus the list's lowest label, the
gain of rankrm's NDCG metric, sklearn's convention; the default) or "exp2" = 2^(that) - 1, the
exponential gain allRank uses. allRank applies 2^y - 1 to the raw relevance labels (>= 0, padded
as -1); here the gain is always taken of min-shifted labels so it does not depend on the label
offset (VADER's ratings are negative for half the texts). The two agree on every list whose
lowest label is 0, which is how the tests compare with allRank. Discount 1/log2(position + 2) for
0-based positions, IDCG from the label order. Each loss is 1 - (approximate) NDCG per list, then
the mean over eligible lists; allRank returns -NDCG (the same gradient), averaged over every list
of the batch, including lists whose IDCG is 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankrm.errors import RankrmError
from rankrm.losses.classic import lambda_weights, reward_positions
from rankrm.pairs import (
    check_batch,
    dcg_discount,
    ideal_dcg,
    linear_gain,
    list_pair_mean,
    masked,
    mean_over_lists,
    pair_diff,
    pair_mask,
)

GAINS = ("linear", "exp2")
SCHEMES = ("ndcg2", "ndcg2pp")


def _positive(name: str, **values: float) -> None:
    for key, value in values.items():
        if not value > 0:
            raise RankrmError(f"{name} {key} must be > 0, got {value}")


def ndcg_gain(labels: Tensor, mask: Tensor, gain: str, dtype: torch.dtype) -> Tensor:
    """Gain of every real item (0 when padded): (B, K) -> (B, K)."""
    if gain not in GAINS:
        raise RankrmError(f"gain must be one of {GAINS}, got {gain!r}")
    g = linear_gain(labels, mask).to(dtype)
    return masked(torch.exp2(g) - 1.0, mask) if gain == "exp2" else g


def _one_minus_ndcg(dcg: Tensor, gain: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean over eligible lists of 1 - dcg / IDCG: dcg (B,), gain (B, K) -> scalar."""
    idcg = ideal_dcg(gain, [None])[:, 0]  # (B,); 0 only for lists without pairs
    return mean_over_lists(1.0 - dcg / masked(idcg, idcg > 0, 1.0), pair_mask(labels, mask).any(dim=(1, 2)))


def approx_ndcg(rewards: Tensor, labels: Tensor, mask: Tensor, *, alpha: float = 1.0, gain: str = "linear") -> Tensor:
    """ApproxNDCG (Qin, Liu & Li 2010, eqs. 19-21): (B, K) -> scalar.

    Each item's rank is smoothed, `pos_i = 1 + sum_{j real, j != i} sigmoid(alpha * (r_j - r_i))`
    (1-based), and `ApproxNDCG = sum_i g_i / log2(1 + pos_i) / IDCG`; the loss is 1 - ApproxNDCG
    per list, mean over eligible lists. `alpha` (> 0) sharpens the sigmoid: large = close to the
    true NDCG but a rougher loss; 1.0 is allRank's default (`approxNDCGLoss`). Matches allRank's
    `approxNDCGLoss` up to the constant 1, the gain convention (module docstring), the set of lists
    averaged, and its clamp of each sigmoid at 1e-10 (not applied here).
    """
    check_batch(rewards, labels, mask)
    _positive("approx_ndcg", alpha=alpha)
    g = ndcg_gain(labels, mask, gain, rewards.dtype)  # (B, K)
    eye = torch.eye(mask.shape[-1], dtype=torch.bool, device=mask.device)
    others = mask.unsqueeze(2) & mask.unsqueeze(1) & ~eye  # (B, K, K): [b, i, j] real j != i
    beaten_by = torch.where(others, torch.sigmoid(-float(alpha) * pair_diff(rewards, mask)), 0.0)  # (B, K, K)
    pos = 1.0 + beaten_by.sum(dim=-1)  # (B, K) smoothed 1-based rank
    return _one_minus_ndcg((g / torch.log2(1.0 + pos)).sum(dim=-1), g, labels, mask)


def neural_sort(rewards: Tensor, mask: Tensor, tau: float, sinkhorn_iters: int) -> Tensor:
    """NeuralSort relaxed permutation (Grover et al. 2019), Sinkhorn-scaled: (B, K) -> (B, K, K).

    `P[b, p, j]` ~ P(item j is at 0-based rank p) among the list's n real items:
    `softmax_j(((n - 1 - 2p) * r_j - sum_k |r_j - r_k|) / tau)` for p < n, then `sinkhorn_iters`
    rounds of column then row normalisation (doubly stochastic). Rows p >= n and padded columns are 0.
    """
    r = masked(rewards, mask)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K)
    spread = torch.where(both, (r.unsqueeze(2) - r.unsqueeze(1)).abs(), 0.0).sum(dim=-1)  # (B, K): sum_k |r_j - r_k|
    n = mask.sum(dim=-1, keepdim=True)  # (B, 1)
    rank = torch.arange(mask.shape[-1], device=mask.device)  # (K,)
    scale = (n - 1 - 2 * rank).to(r.dtype)  # (B, K): n + 1 - 2(p + 1) for 1-based rank p + 1
    logits = (scale.unsqueeze(-1) * r.unsqueeze(1) - spread.unsqueeze(1)) / float(tau)  # (B, K ranks, K items)
    valid = (rank.unsqueeze(0) < n).unsqueeze(-1) & mask.unsqueeze(1)  # (B, K, K): real rank x real item
    # finfo.min (not -inf) keeps a fully padded row finite; it is zeroed right after.
    p = torch.where(valid, masked(logits, valid, torch.finfo(r.dtype).min).softmax(dim=-1), 0.0)
    for _ in range(int(sinkhorn_iters)):
        p = p / _nonzero(p.sum(dim=1, keepdim=True))  # columns (items) sum to 1
        p = p / _nonzero(p.sum(dim=2, keepdim=True))  # rows (ranks) sum to 1
    return p


def _nonzero(sums: Tensor) -> Tensor:
    """Sums with 0 (a padded row or column) replaced by 1. allRank clamps them at 1e-10 instead: the
    same values, but dividing by 1e-10 fifty times overflows the backward pass to NaN."""
    return masked(sums, sums > 0, 1.0)


def neural_ndcg(
    rewards: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    temperature: float = 1.0,
    gain: str = "linear",
    sinkhorn_iters: int = 50,
) -> Tensor:
    """NeuralNDCG (Pobrotyn & Bialobrzeski 2021, eq. 8): (B, K) -> scalar.

    With `P = neural_sort(rewards)`, the expected gain at rank p is `(P g)_p` and NeuralNDCG =
    `sum_p (P g)_p / log2(p + 2) / IDCG`; the loss is 1 - NeuralNDCG per list, mean over eligible
    lists. `temperature` is NeuralSort's tau (> 0; 1.0 is allRank's default; lower = closer to the
    hard sort, noisier gradient). Matches allRank's `neuralNDCG` (deterministic variant, k = None)
    up to the constant 1, the gain convention and the lists averaged (module docstring), and one
    more difference: allRank stops Sinkhorn early once the whole batch's rows and columns sum to 1
    within 1e-6; here a fixed `sinkhorn_iters` (its max_iter, 50) keeps each list independent of
    its batch-mates and free of a host sync (the tests agree with allRank to 1e-5).
    """
    check_batch(rewards, labels, mask)
    _positive("neural_ndcg", temperature=temperature, sinkhorn_iters=sinkhorn_iters)
    g = ndcg_gain(labels, mask, gain, rewards.dtype)  # (B, K)
    expected_gain = (neural_sort(rewards, mask, temperature, sinkhorn_iters) @ g.unsqueeze(-1)).squeeze(-1)  # (B, K)
    disc = dcg_discount(torch.arange(mask.shape[-1], device=mask.device), None, rewards.dtype)  # (K,)
    return _one_minus_ndcg((expected_gain * disc).sum(dim=-1), g, labels, mask)


def _ndcg2_weights(rewards: Tensor, gain: Tensor, mask: Tensor) -> Tensor:
    """NDCG-Loss2 weights |G_i - G_j| * delta_|p_i - p_j| (Wang et al. 2018, eq. 13): -> (B, K, K).

    `delta_m = |1/log2(1 + m) - 1/log2(2 + m)|`; positions from the current reward order, and items
    tied in reward and label take the mean of delta over the positions their tie groups occupy
    (the expectation over a random order of the tied items), so the weights ignore slot order.
    """
    ahead, group = reward_positions(rewards, gain, mask)  # (B, K) each
    k = mask.shape[-1]
    m = torch.arange(k, device=mask.device)
    gap = (m.unsqueeze(1) - m.unsqueeze(0)).abs().to(rewards.dtype)  # (K, K) |p - q|
    delta = torch.where(gap > 0, (1 / torch.log2(1 + gap) - 1 / torch.log2(2 + gap)).abs(), 0.0)  # (K, K)
    table = F.pad(delta.cumsum(0).cumsum(1), (1, 0, 1, 0))  # (K + 1, K + 1) 2-D prefix sums
    lo_i, hi_i = ahead.unsqueeze(2), (ahead + group).unsqueeze(2)  # (B, K, 1)
    lo_j, hi_j = ahead.unsqueeze(1), (ahead + group).unsqueeze(1)  # (B, 1, K)
    block = table[hi_i, hi_j] - table[lo_i, hi_j] - table[hi_i, lo_j] + table[lo_i, lo_j]  # (B, K, K)
    mean_delta = block / (group.unsqueeze(2) * group.unsqueeze(1)).clamp_min(1)
    idcg = ideal_dcg(gain, [None])  # (B, 1)
    g = gain / masked(idcg, idcg > 0, 1.0)  # (B, K) normalised gains G
    return (g.unsqueeze(2) - g.unsqueeze(1)).abs() * mean_delta


def lambdaloss(
    rewards: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    scheme: str = "ndcg2",
    mu: float = 10.0,
    sigma: float = 1.0,
    gain: str = "linear",
) -> Tensor:
    """LambdaLoss (Wang et al. 2018) with the NDCG-Loss2 or NDCG-Loss2++ weighting: (B, K) -> scalar.

    Per list, `sum_{valid pairs} w_ij * -logsigmoid(sigma * (r_i - r_j)) / #pairs`, then the mean
    over eligible lists (as `lambdarank`). `scheme`: "ndcg2" `w = |G_i - G_j| delta_|p_i - p_j|`
    (`_ndcg2_weights`; the paper's bound-tight NDCG metric), "ndcg2pp" `w = mu * ndcg2 + lambdarank
    weights` (eq. 15; `mu` = 10, allRank's default). Weights are detached. Matches allRank's
    `lambdaLoss(weighing_scheme="ndcgLoss2_scheme" / "ndcgLoss2PP_scheme")` except its reduction:
    allRank sums `-log2` over all pairs of the batch; here the natural log is averaged per list then
    over lists, so a list's loss is allRank's * ln(2) / #pairs (tested); and allRank breaks reward
    ties by sort order, here as in `lambdarank`.
    """
    check_batch(rewards, labels, mask)
    _positive("lambdaloss", mu=mu, sigma=sigma)
    if scheme not in SCHEMES:
        raise RankrmError(f"lambdaloss scheme must be one of {SCHEMES}, got {scheme!r}")
    g = ndcg_gain(labels, mask, gain, rewards.dtype)
    pairs = pair_mask(labels, mask)
    with torch.no_grad():
        weights = _ndcg2_weights(rewards, g, mask)  # (B, K, K)
        if scheme == "ndcg2pp":
            weights = float(mu) * weights + lambda_weights(rewards, g, mask)
    nll = -F.logsigmoid(float(sigma) * pair_diff(rewards, mask))  # (B, K, K)
    return mean_over_lists(list_pair_mean(weights * nll, pairs), pairs.any(dim=(1, 2)))
