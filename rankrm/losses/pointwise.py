"""Pointwise regression on graded labels, and the regularisers every loss accepts."""

from __future__ import annotations

import torch
from torch import Tensor

from rankrm.errors import RankrmError
from rankrm.pairs import check_batch, list_pair_mean, masked, mean_over_lists, pair_mask, pooled_pair_mean


def standardized_labels(labels: Tensor, mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Labels z-scored inside each list over its real items (population std): (B, K) -> (B, K), 0 padded.
    All-tied lists (std 0) get 0 targets; they are not eligible anyway."""
    lab = masked(labels, mask).to(dtype)
    n = mask.sum(dim=-1, keepdim=True).clamp_min(1)  # (B, 1)
    centred = masked(lab - lab.sum(dim=-1, keepdim=True) / n, mask)
    std = (centred.square().sum(dim=-1, keepdim=True) / n).sqrt()  # (B, 1)
    return masked(centred / masked(std, std > 0, 1.0), mask)


def regression(
    rewards: Tensor, labels: Tensor, mask: Tensor, *, standardize: bool = True, rmse: bool = False
) -> Tensor:
    """Pointwise least squares on the labels: (B, K) -> scalar.

    Per list, `mean_i (r_i - z_i)^2` over its real items, then the mean over eligible lists, with
    `z` the labels standardised *within the list* (mean 0, std 1; `standardize=false`: the raw
    labels). Per list, not global, because a list's labels are only comparable among themselves
    (OASST ranks are 0..K-1 in every list; ratings of different prompts sit on different scales),
    because the target then ignores each list's label offset and scale exactly as every ranking
    loss here does, and because a pure batch function cannot see dataset-wide statistics. The
    price: rewards are pulled to unit spread inside each list, a margin the ranking losses lack.

    allRank's `pointwise_rmse` is the per-list root of this MSE on the raw labels, with the
    prediction scaled by the number of relevance levels: `standardize=false, rmse=true` computes it
    for `no_of_levels = 1` (tested), except that only eligible lists are averaged.
    """
    check_batch(rewards, labels, mask)
    if not isinstance(standardize, bool) or not isinstance(rmse, bool):
        raise RankrmError(f"regression standardize and rmse must be true or false, got {standardize!r}, {rmse!r}")
    target = standardized_labels(labels, mask, rewards.dtype) if standardize else masked(labels, mask).to(rewards.dtype)
    err = masked(masked(rewards, mask) - target, mask)  # (B, K)
    mse = err.square().sum(dim=-1) / mask.sum(dim=-1).clamp_min(1)  # (B,)
    if rmse:  # sqrt has an infinite slope at 0: take it only where the error is not exactly 0
        mse = torch.where(mse > 0, masked(mse, mse > 0, 1.0).sqrt(), 0.0)
    return mean_over_lists(mse, pair_mask(labels, mask).any(dim=(1, 2)))


def reward_penalty(rewards: Tensor, labels: Tensor, mask: Tensor, center_coef: float, l2_coef: float) -> Tensor:
    """`center_coef * C + l2_coef * L2` over the valid pairs: (B, K) -> scalar (0 when no pairs).

    C = TRL's `center_rewards_coefficient` term (Eisenstein et al. 2023): `mean (r_i + r_j)^2` over
    every valid pair of the batch, pooled, which is exactly TRL's `mean((r_chosen + r_rejected)^2)`
    on the lists' expanded pairs. L2 = OpenAssistant's reward-model loss term (`RMLoss`, beta):
    per list `mean 0.5 * (r_i^2 + r_j^2)` over its pairs, then the mean over lists, as its
    per-conversation mean. Both see only untied pairs (a tied pair is not a pair).
    """
    pairs = pair_mask(labels, mask)  # (B, K, K)
    r = masked(rewards, mask)
    total = rewards.new_zeros(())
    if center_coef:
        total = total + float(center_coef) * pooled_pair_mean((r.unsqueeze(2) + r.unsqueeze(1)).square(), pairs)
    if l2_coef:
        sq = r.square()
        l2 = list_pair_mean(0.5 * (sq.unsqueeze(2) + sq.unsqueeze(1)), pairs)  # (B,)
        total = total + float(l2_coef) * mean_over_lists(l2, pairs.any(dim=(1, 2)))
    return total
