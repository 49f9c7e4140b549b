"""How well a reward model predicts label ties (graded data): sums for `rankrm.metrics.RankingMetrics`.

Reported only for a split with tied pairs (two real responses with equal labels); every existing
metric is unchanged (untied pairs are still judged by `pair_acc`). Definitions:

- `tie_auc` (any model): per list with both kinds of pair, the probability that a random tied
  pair's reward gap |r_i - r_j| is smaller than a random untied pair's (1/2 for equal gaps), i.e.
  the ROC AUC of "small gap" as a tie detector inside the list; mean over such lists. 0.5 = gaps
  say nothing about ties; a model that drops tied pairs may still reach 1 by luck or by spacing.
- `outcome_acc` (any model): the share of all pairs (untied and tied, each unordered pair once)
  whose 3-way call win / tie / loss is right. A tie model calls a tie when P(tie) exceeds both
  P(win) and P(loss), else the likelier winner; a model without a tie parameter never calls a
  tie (so it gets every tied pair wrong) and calls the higher reward the winner (equal rewards
  are wrong, as in `pair_acc`).
- `tie_nll` (tie models only): mean -log P(tie) over the tied pairs: held-out tie log-likelihood.
- `outcome_nll` (tie models only): mean -log P(observed outcome) over all pairs (untied: -log
  P(better beats worse)), the held-out likelihood of the whole 3-outcome model.
- `n_tied_pairs`: the tied pairs counted.

Memory and time per batch: O(B K^4) for `tie_auc` (every tied pair against every untied pair of
its list; 6,561 comparisons per list at K = 9), O(B K^2) for the rest.
"""

from __future__ import annotations

import torch
from torch import Tensor

from rankrm.losses.ties import Outcome
from rankrm.pairs import masked, pair_diff, pair_mask, tie_mask

SUM_KEYS = ("tied_pairs", "outcome_pairs", "outcome_correct", "auc_sum", "auc_lists", "tie_nll_sum", "nll_sum")
Tie = float | Tensor


def tie_sums(
    rewards: Tensor, labels: Tensor, mask: Tensor, outcome: Outcome | None, tie: Tie | None
) -> dict[str, Tensor]:
    """Additive statistics of one batch (keys `SUM_KEYS`); `outcome`/`tie` describe a tie model, or None."""
    pairs, ties = pair_mask(labels, mask), tie_mask(labels, mask)  # (B, K, K) each
    d = pair_diff(rewards.detach(), mask)  # (B, K, K): r_i - r_j
    dtype = torch.promote_types(rewards.dtype, torch.float32)
    out = {"tied_pairs": ties.sum(), "outcome_pairs": pairs.sum() + ties.sum()}
    if outcome is None:
        out["outcome_correct"] = (pairs & (d > 0)).sum()
        out["tie_nll_sum"] = out["nll_sum"] = torch.zeros((), dtype=dtype, device=d.device)
    else:
        log_win, log_tie = outcome(d.to(dtype), tie)  # (B, K, K) each
        log_loss = outcome(-d.to(dtype), tie)[0]  # P(j beats i)
        call_tie = log_tie > torch.maximum(log_win, log_loss)
        out["outcome_correct"] = (pairs & ~call_tie & (log_win > log_loss)).sum() + (ties & call_tie).sum()
        out["tie_nll_sum"] = -torch.where(ties, log_tie, 0.0).sum()
        out["nll_sum"] = out["tie_nll_sum"] - torch.where(pairs, log_win, 0.0).sum()
    auc, has_both = _tie_auc(d.abs(), ties, pairs)
    out["auc_sum"] = masked(auc, has_both).sum().to(dtype)
    out["auc_lists"] = has_both.sum()
    return out


def _tie_auc(gap: Tensor, ties: Tensor, pairs: Tensor) -> tuple[Tensor, Tensor]:
    """Per-list AUC of small gaps for tied vs untied pairs: (B, K, K) x3 -> (B,), (B,) bool."""
    g = gap.flatten(1)  # (B, K*K)
    t, u = ties.flatten(1), pairs.flatten(1)  # (B, K*K) each
    smaller = (g.unsqueeze(2) < g.unsqueeze(1)).to(gap.dtype) + 0.5 * (g.unsqueeze(2) == g.unsqueeze(1))  # [a, b]
    both = t.unsqueeze(2) & u.unsqueeze(1)  # (B, KK, KK): a tied, b untied
    count = both.sum(dim=(1, 2))
    return torch.where(both, smaller, 0.0).sum(dim=(1, 2)) / count.clamp_min(1), count > 0


def tie_ratios(sums: dict[str, Tensor], has_outcome: bool) -> dict[str, Tensor]:
    """Metric dict from accumulated sums; empty when no tied pair was seen."""
    if sums["tied_pairs"] == 0:
        return {}
    f = torch.get_default_dtype()
    out = {
        "tie_auc": sums["auc_sum"].to(f) / sums["auc_lists"].clamp_min(1),
        "outcome_acc": sums["outcome_correct"].to(f) / sums["outcome_pairs"].clamp_min(1),
        "n_tied_pairs": sums["tied_pairs"].to(f),
    }
    if has_outcome:
        out["tie_nll"] = sums["tie_nll_sum"].to(f) / sums["tied_pairs"]
        out["outcome_nll"] = sums["nll_sum"].to(f) / sums["outcome_pairs"]
    return out
