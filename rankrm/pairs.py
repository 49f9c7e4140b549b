"""Pair expansion and masked list primitives shared by `rankrm.losses` and `rankrm.metrics`.

Batch contract: `rewards (B, K)` float, `labels (B, K)` float (higher is better, ties allowed),
`mask (B, K)` bool (False = padding). A pair (b, i, j) is valid iff
`mask[b, i] & mask[b, j] & labels[b, i] > labels[b, j]`; tied labels make no pair.

Why a dense (B, K, K) pair mask rather than index lists: for the list lengths this project
sees (K <= 16) the dense form is a few elementwise kernels with static shapes and no host
sync, while `pair_index` needs `nonzero` (a device->host sync on GPU, a dynamic shape for
compilers) plus gathers. The dense form wastes at most K^2 - C(K, 2) slots, noise at these
sizes; on CPU at B=64, K=9 both run in about the same time (`scripts/bench_losses.py`).
`pair_index` is kept for callers that want explicit pairs (a TRL-style expansion).

Garbage in padded slots: everything reads rewards and labels through `masked` (torch.where),
never through a multiplication by the mask, so NaN/inf in a padded slot reaches neither a
result nor a gradient (where's backward sends exact zeros to the unselected branch, whereas
0 * NaN is NaN). No function here writes to its inputs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rankrm.errors import RankrmError

MARGIN_MODES = ("constant", "label_gap")


def check_batch(rewards: Tensor, labels: Tensor, mask: Tensor) -> None:
    """Raise ValueError unless rewards, labels, mask are (B, K) float, (B, K), (B, K) bool."""
    shapes = (tuple(rewards.shape), tuple(labels.shape), tuple(mask.shape))
    if rewards.dim() != 2 or len(set(shapes)) != 1:
        raise ValueError(f"rewards, labels, mask must all be (B, K); got {shapes}")
    if mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor, got {mask.dtype}")
    if not rewards.is_floating_point():
        raise ValueError(f"rewards must be floating point, got {rewards.dtype}")


def masked(x: Tensor, mask: Tensor, fill: float = 0.0) -> Tensor:
    """`x` with padded slots replaced by `fill`; (B, K) -> (B, K). Safe against NaN garbage."""
    return torch.where(mask, x, fill)


def pair_mask(labels: Tensor, mask: Tensor) -> Tensor:
    """Dense pair mask: (B, K), (B, K) -> (B, K, K) bool, [b, i, j] = "i is labelled above j"."""
    lab = masked(labels, mask)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K): both slots are real responses
    return both & (lab.unsqueeze(2) > lab.unsqueeze(1))  # (B, K, K)


def tie_mask(labels: Tensor, mask: Tensor) -> Tensor:
    """Tied pairs, each unordered pair once: (B, K), (B, K) -> (B, K, K) bool, [b, i, j] = "i < j are
    both real and labelled equal". The complement of `pair_mask` among real pairs, for tie models."""
    lab = masked(labels, mask)
    both = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K)
    k = labels.shape[-1]
    upper = torch.ones(k, k, dtype=torch.bool, device=labels.device).triu(diagonal=1)  # (K, K): i < j
    return both & upper & (lab.unsqueeze(2) == lab.unsqueeze(1))  # (B, K, K)


def pair_index(labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Valid pairs as three (P,) LongTensors (b, i, j), winner i, loser j, in row-major order."""
    b, i, j = pair_mask(labels, mask).nonzero(as_tuple=True)
    return b, i, j


def pair_diff(rewards: Tensor, mask: Tensor) -> Tensor:
    """Reward differences: (B, K) -> (B, K, K), [b, i, j] = r[b, i] - r[b, j]; padded read as 0."""
    r = masked(rewards, mask)
    return r.unsqueeze(2) - r.unsqueeze(1)  # (B, K, K)


def pair_margin(labels: Tensor, mask: Tensor, margin: float, margin_mode: str) -> Tensor | float:
    """Margin each pair must clear: a float ("constant") or (B, K, K) ("label_gap").

    "constant": `margin` for every pair. "label_gap": `margin * (labels_i - labels_j)`, the
    graded-data margin of Llama 2 (Touvron et al. 2023, eq. 2) made linear in the label gap,
    so a 5-vs-1 star pair must be separated further than a 3-vs-2 pair.
    """
    if margin_mode not in MARGIN_MODES:
        raise RankrmError(f"margin_mode must be one of {MARGIN_MODES}, got {margin_mode!r}")
    if margin_mode == "constant":
        return float(margin)
    lab = masked(labels, mask)
    return float(margin) * (lab.unsqueeze(2) - lab.unsqueeze(1))  # (B, K, K)


def list_pair_count(pairs: Tensor) -> Tensor:
    """Number of valid pairs per list: (B, K, K) bool -> (B,) long."""
    return pairs.sum(dim=(1, 2))


def pooled_pair_mean(values: Tensor, pairs: Tensor) -> Tensor:
    """Mean of `values (B, K, K)` over all valid pairs of the batch; 0 (with graph) if none."""
    total = torch.where(pairs, values, 0.0).sum()
    return total / pairs.sum().clamp_min(1)


def list_pair_mean(values: Tensor, pairs: Tensor) -> Tensor:
    """Per-list mean of `values (B, K, K)` over that list's valid pairs -> (B,); 0 if none."""
    total = torch.where(pairs, values, 0.0).sum(dim=(1, 2))
    return total / list_pair_count(pairs).clamp_min(1)


def mean_over_lists(per_list: Tensor, eligible: Tensor) -> Tensor:
    """Mean of `per_list (B,)` over `eligible (B,)` lists; 0 (still attached to graph) if none."""
    total = torch.where(eligible, per_list, 0.0).sum()
    return total / eligible.sum().clamp_min(1)


def linear_gain(labels: Tensor, mask: Tensor) -> Tensor:
    """NDCG gain: labels minus the list's lowest real label, (B, K) -> (B, K), 0 when padded.

    Linear gain on min-shifted labels is sklearn's `ndcg_score` convention (gain = y_true);
    a strict list K-1..0 gets gains K-1..0, graded stars 1..5 get 0..4. Shifting makes the
    gain independent of the label offset; the worst response always has gain 0.
    """
    lowest = masked(labels, mask, float("inf")).amin(dim=-1, keepdim=True)  # (B, 1)
    return masked(labels - lowest, mask)


def dcg_discount(position: Tensor, cutoff: int | None, dtype: torch.dtype) -> Tensor:
    """DCG discount 1 / log2(position + 2) of 0-based positions; 0 at positions >= cutoff."""
    disc = 1.0 / torch.log2(position.to(dtype) + 2.0)
    if cutoff is not None:
        disc = torch.where(position < cutoff, disc, 0.0)
    return disc


def shared_discount(ahead: Tensor, group: Tensor, cutoffs: list[int | None], dtype: torch.dtype) -> Tensor:
    """Mean discount of the positions [ahead, ahead + group) a tie group occupies.

    ahead, group: (B, K) long (items ranked strictly ahead; size of the item's tie group,
    itself included) -> (C, B, K), one slice per cutoff. This is the expected discount under a
    uniformly random order of the tied items, in closed form (sklearn's tie averaging).
    """
    pos = torch.arange(ahead.shape[-1], device=ahead.device)
    disc = torch.stack([dcg_discount(pos, c, dtype) for c in cutoffs])  # (C, K)
    cum = torch.cat([disc.new_zeros(len(cutoffs), 1), disc.cumsum(dim=-1)], dim=-1)  # (C, K + 1)
    return (cum[:, ahead + group] - cum[:, ahead]) / group.clamp_min(1)  # (C, B, K)


def ideal_dcg(gains: Tensor, cutoffs: list[int | None]) -> Tensor:
    """Best achievable DCG per list: gains (B, K) -> (B, C), one column per cutoff (None = K)."""
    best = gains.sort(dim=-1, descending=True).values  # (B, K): padded gains are 0, harmless
    pos = torch.arange(gains.shape[-1], device=gains.device)
    disc = torch.stack([dcg_discount(pos, c, gains.dtype) for c in cutoffs], dim=-1)  # (K, C)
    return best @ disc  # (B, C)
