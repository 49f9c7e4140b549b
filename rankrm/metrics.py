"""Ranking metrics for reward models: functional forms and an epoch-exact torchmetrics class.

Inputs follow the batch contract of `rankrm.pairs`: `rewards (B, K)`, `labels (B, K)`,
`mask (B, K)` bool; padded slots may hold garbage (NaN included) and are never read.

Conventions (documented once, here):
- Eligible list: a list with at least one valid pair (>= 2 real responses whose labels are
  not all equal). Per-list metrics average over eligible lists only; an all-tied list has no
  order to reproduce. With nothing eligible (or no pair) a metric returns 0; `n_lists` and
  `n_pairs` tell the reader that the value is empty.
- Reward ties in pairwise metrics (`pair_acc`, `exact_order`): a pair counts as correct only
  if r_i > r_j strictly, like TRL's `chosen > rejected` accuracy; a tie is wrong.
- Reward ties in positional metrics (`ndcg`, `top1_acc`): the expectation over a uniformly
  random order of the tied responses, computed in closed form (sklearn's `ndcg_score`
  tie averaging). Deterministic and invariant to the slot order.
- NDCG gain: `rankrm.pairs.linear_gain`, labels minus the list's lowest label (linear gain,
  sklearn's convention); discount 1 / log2(position + 2) for 0-based positions < k.
- Kendall tau-b per list (ties in both rankings, `scipy.stats.kendalltau` variant "b").
  When all rewards of a list tie, tau-b is 0/0; it is defined as 0 here (no information).
- Label ties: on a split with tied pairs the tie metrics of `rankrm.tie_metrics` are added
  (tie_auc, outcome_acc, n_tied_pairs; tie_nll, outcome_nll for a tie model's `outcome`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

from rankrm.errors import RankrmError
from rankrm.losses.ties import Outcome
from rankrm.pairs import check_batch, ideal_dcg, linear_gain, masked, pair_mask, shared_discount
from rankrm.tie_metrics import SUM_KEYS, Tie, tie_ratios, tie_sums


def _work_dtype(rewards: Tensor) -> torch.dtype:
    """float32 at least, so bf16/fp16 rewards do not degrade NDCG or tau sums."""
    return torch.promote_types(rewards.dtype, torch.float32)


def _sign_matrix(x: Tensor) -> Tensor:
    """Pairwise order signs: (B, K) -> (B, K, K) int, [b, i, j] = sign(x_i - x_j) without overflow."""
    xi, xj = x.unsqueeze(2), x.unsqueeze(1)
    return (xi > xj).int() - (xi < xj).int()


def _pair_counts(rewards: Tensor, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Valid pairs and strictly correct pairs per list: -> (B,) long, (B,) long."""
    pairs = pair_mask(labels, mask)  # (B, K, K)
    r = masked(rewards, mask)
    correct = pairs & (r.unsqueeze(2) > r.unsqueeze(1))  # (B, K, K)
    return pairs.sum(dim=(1, 2)), correct.sum(dim=(1, 2))


def _kendall_tau_b(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Kendall tau-b of each list, (B, K) -> (B,); 0 when either ranking is all ties."""
    both = mask.unsqueeze(2) & mask.unsqueeze(1)  # (B, K, K)
    s_r = _sign_matrix(masked(rewards, mask))
    s_l = _sign_matrix(masked(labels, mask))
    # Each unordered pair appears twice in the (K, K) grid; the factor 2 cancels in the ratio.
    concord = torch.where(both, s_r * s_l, 0).sum(dim=(1, 2)).to(_work_dtype(rewards))
    untied_l = torch.where(both, s_l != 0, False).sum(dim=(1, 2))
    untied_r = torch.where(both, s_r != 0, False).sum(dim=(1, 2))
    denom = (untied_l * untied_r).to(concord.dtype).sqrt()
    return torch.where(denom > 0, concord / masked(denom, denom > 0, 1.0), 0.0)


def _ndcg(rewards: Tensor, labels: Tensor, mask: Tensor, cutoffs: Sequence[int | None]) -> Tensor:
    """Tie-averaged NDCG of each list at each cutoff: (B, K) -> (B, C); 0 where IDCG = 0."""
    dtype = _work_dtype(rewards)
    r = masked(rewards, mask)
    real_k = mask.unsqueeze(1)  # (B, 1, K): compare each slot i with the real slots k
    above = (real_k & (r.unsqueeze(1) > r.unsqueeze(2))).sum(dim=-1)  # (B, K) strictly better
    level = (real_k & (r.unsqueeze(1) == r.unsqueeze(2))).sum(dim=-1)  # (B, K) tie group size
    spread = shared_discount(above, level, list(cutoffs), dtype)  # (C, B, K)
    gain = linear_gain(labels, mask).to(dtype)  # (B, K), 0 in padded slots
    dcg = (gain.unsqueeze(0) * spread).sum(dim=-1).T  # (C, B) -> (B, C)
    idcg = ideal_dcg(gain, list(cutoffs))  # (B, C)
    return torch.where(idcg > 0, dcg / masked(idcg, idcg > 0, 1.0), 0.0)


def _top1(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """P(a top-scored response, ties drawn at random, is among the best-labelled): -> (B,)."""
    r = masked(rewards, mask, float("-inf"))
    lab = masked(labels, mask, float("-inf"))
    top = mask & (r == r.amax(dim=-1, keepdim=True))  # (B, K)
    best = mask & (lab == lab.amax(dim=-1, keepdim=True))  # (B, K)
    return (top & best).sum(dim=-1).to(_work_dtype(rewards)) / top.sum(dim=-1).clamp_min(1)


def _mean(total: Tensor, count: Tensor) -> Tensor:
    """total / count as a float, 0 when count is 0."""
    return total.to(torch.get_default_dtype()) / count.clamp_min(1)


def _eligible_mean(per_list: Tensor, n_pairs: Tensor) -> Tensor:
    """Mean of per_list (B,) over lists with >= 1 valid pair."""
    eligible = n_pairs > 0
    return _mean(torch.where(eligible, per_list, 0).sum(), eligible.sum())


def pair_accuracy(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Share of all valid pairs of the batch with r_i > r_j strictly (pooled over pairs)."""
    check_batch(rewards, labels, mask)
    n_pairs, correct = _pair_counts(rewards, labels, mask)
    return _mean(correct.sum(), n_pairs.sum())


def kendall_tau(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean Kendall tau-b over eligible lists (all-tied rewards give tau = 0)."""
    check_batch(rewards, labels, mask)
    return _eligible_mean(_kendall_tau_b(rewards, labels, mask), pair_mask(labels, mask).sum(dim=(1, 2)))


def ndcg_at(rewards: Tensor, labels: Tensor, mask: Tensor, k: int | None) -> Tensor:
    """Mean tie-averaged NDCG@k over eligible lists (k=None: the full list)."""
    check_batch(rewards, labels, mask)
    if k is not None:
        k = _check_cutoffs([k])[0]
    per_list = _ndcg(rewards, labels, mask, [k])[:, 0]
    return _eligible_mean(per_list, pair_mask(labels, mask).sum(dim=(1, 2)))


def ndcg(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean tie-averaged NDCG over the whole list, over eligible lists."""
    return ndcg_at(rewards, labels, mask, None)


def top1_accuracy(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Mean over eligible lists of P(the top-scored response is among the best-labelled)."""
    check_batch(rewards, labels, mask)
    return _eligible_mean(_top1(rewards, labels, mask), pair_mask(labels, mask).sum(dim=(1, 2)))


def exact_order(rewards: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """Share of eligible lists whose every valid pair is strictly correct (the seed's "acc")."""
    check_batch(rewards, labels, mask)
    n_pairs, correct = _pair_counts(rewards, labels, mask)
    return _eligible_mean((correct == n_pairs).int(), n_pairs)


def _check_cutoffs(cutoffs: Sequence[int]) -> tuple[int, ...]:
    """Validated NDCG cutoffs (a config value, hence RankrmError)."""
    out = tuple(int(c) for c in cutoffs)
    if any(c < 1 for c in out) or len(set(out)) != len(out):
        raise RankrmError(f"NDCG cutoffs must be distinct integers >= 1, got {list(cutoffs)}")
    return out


def per_list_metrics(
    rewards: Tensor, labels: Tensor, mask: Tensor, cutoffs: Sequence[int] = (1, 3)
) -> dict[str, Tensor]:
    """Each list's own values, all (B,): `n_pairs`, `correct` (long), `eligible` (bool), and `kendall_tau`,
    `top1_acc`, `ndcg`, `ndcg@c`, `exact_order` (float, 0 where the list is not eligible). Every epoch
    metric is a pooled ratio of their sums (`RankingMetrics`); `rankrm.evaluation` resamples them."""
    check_batch(rewards, labels, mask)
    cutoffs = _check_cutoffs(cutoffs)
    rewards = rewards.detach()
    n_pairs, correct = _pair_counts(rewards, labels, mask)
    eligible = n_pairs > 0  # (B,)
    ndcgs = _ndcg(rewards, labels, mask, [None, *cutoffs])  # (B, 1 + C)
    values = {
        "kendall_tau": _kendall_tau_b(rewards, labels, mask),
        "top1_acc": _top1(rewards, labels, mask),
        "ndcg": ndcgs[:, 0],
        **{f"ndcg@{c}": ndcgs[:, 1 + n] for n, c in enumerate(cutoffs)},
        "exact_order": (correct == n_pairs).to(_work_dtype(rewards)),
    }
    out = {k: torch.where(eligible, v, 0.0).float() for k, v in values.items()}
    return {"n_pairs": n_pairs, "correct": correct, "eligible": eligible, **out}


def _batch_sums(rewards: Tensor, labels: Tensor, mask: Tensor, cutoffs: tuple[int, ...]) -> dict[str, Tensor]:
    """Additive sufficient statistics of one batch; every metric is a ratio of two of them."""
    per = per_list_metrics(rewards, labels, mask, cutoffs)
    return {
        "correct_pairs": per["correct"].sum(),
        "total_pairs": per["n_pairs"].sum(),
        "total_lists": per["eligible"].sum(),
        "exact_lists": (per["exact_order"] > 0).sum(),  # integer count, exact at any size
        "tau_sum": per["kendall_tau"].sum(),
        "top1_sum": per["top1_acc"].sum(),
        "ndcg_sum": torch.stack([per["ndcg"], *(per[f"ndcg@{c}"] for c in cutoffs)], dim=-1).sum(dim=0),
    }


def _ratios(sums: dict[str, Tensor], cutoffs: tuple[int, ...]) -> dict[str, Tensor]:
    """The metric dict (keys of `RankingMetrics.compute`) from accumulated sums."""
    lists = sums["total_lists"]
    out = {
        "pair_acc": _mean(sums["correct_pairs"], sums["total_pairs"]),
        "kendall_tau": _mean(sums["tau_sum"], lists),
        "ndcg": _mean(sums["ndcg_sum"][0], lists),
    }
    out.update({f"ndcg@{c}": _mean(sums["ndcg_sum"][1 + n], lists) for n, c in enumerate(cutoffs)})
    out["top1_acc"] = _mean(sums["top1_sum"], lists)
    out["exact_order"] = _mean(sums["exact_lists"], lists)
    out["n_lists"] = lists.to(torch.get_default_dtype())
    out["n_pairs"] = sums["total_pairs"].to(torch.get_default_dtype())
    return out


def ranking_metrics(
    rewards: Tensor,
    labels: Tensor,
    mask: Tensor,
    cutoffs: Sequence[int] = (1, 3),
    outcome: Outcome | None = None,
    tie: Tie | None = None,
) -> dict[str, Tensor]:
    """All metrics of one batch at once, same keys as `RankingMetrics.compute`."""
    cutoffs = _check_cutoffs(cutoffs)
    ties = tie_ratios(tie_sums(rewards, labels, mask, outcome, tie), outcome is not None)
    return {**_ratios(_batch_sums(rewards, labels, mask, cutoffs), cutoffs), **ties}


class RankingMetrics(Metric):
    """Epoch-exact, DDP-correct accumulation of every ranking metric.

    States are plain sums reduced with "sum" across processes, so `compute()` gives exactly
    the metric of the concatenated epoch: pooled pair accuracy = all correct pairs / all
    pairs (not a mean of batch accuracies), per-list metrics = sum over eligible lists /
    number of eligible lists. `compute()` keys: pair_acc, kendall_tau, ndcg, ndcg@{c} for c
    in `cutoffs`, top1_acc, exact_order, n_lists, n_pairs (all 0-dim float tensors), and the
    tie metrics when tied pairs were seen (`rankrm.tie_metrics`).
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, cutoffs: Sequence[int] = (1, 3), **kwargs) -> None:
        super().__init__(**kwargs)
        self.cutoffs = _check_cutoffs(cutoffs)
        for name in ("correct_pairs", "total_pairs", "total_lists", "exact_lists"):
            # Integer counts: exact at any epoch size.
            self.add_state(name, torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("tau_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("top1_sum", torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("ndcg_sum", torch.zeros(1 + len(self.cutoffs)), dist_reduce_fx="sum")
        for name in SUM_KEYS:  # tie metrics; counts stay integers, sums of logs and AUCs are floats
            float_sum = name.endswith("_sum")
            self.add_state(name, torch.tensor(0.0 if float_sum else 0, dtype=None if float_sum else torch.long), "sum")
        self.add_state("outcome_batches", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(
        self, rewards: Tensor, labels: Tensor, mask: Tensor, outcome: Outcome | None = None, tie: Tie | None = None
    ) -> None:
        """Add one batch: rewards (B, K), labels (B, K), mask (B, K) bool; `outcome` and `tie` for a tie
        model (`rankrm.losses.Loss.outcome` and its current tie parameter)."""
        sums = {**_batch_sums(rewards, labels, mask, self.cutoffs), **tie_sums(rewards, labels, mask, outcome, tie)}
        sums["outcome_batches"] = torch.tensor(int(outcome is not None), device=mask.device)
        for name, value in sums.items():
            setattr(self, name, getattr(self, name) + value.to(getattr(self, name).dtype))

    def compute(self) -> dict[str, Tensor]:
        """Metric dict over everything seen since the last reset."""
        names = ("correct_pairs", "total_pairs", "total_lists", "exact_lists", "tau_sum", "top1_sum")
        out = _ratios({n: getattr(self, n) for n in (*names, "ndcg_sum")}, self.cutoffs)
        return {**out, **tie_ratios({n: getattr(self, n) for n in SUM_KEYS}, bool(self.outcome_batches > 0))}
