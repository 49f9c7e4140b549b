"""Bradley-Terry with ties: tied labels become evidence instead of being dropped.

With `pi = exp(r)` and `d = r_i - r_j`, each model gives P(i beats j), P(tie), P(j beats i) = P(i
beats j) at -d, summing to 1:

- Davidson (1970): `P(i > j) = pi_i / (pi_i + pi_j + nu sqrt(pi_i pi_j)) = e^(d/2) / (e^(d/2) +
  e^(-d/2) + nu)`, `P(tie) = nu / (same)`; `tie` = nu > 0. P(tie | d = 0) = nu / (2 + nu).
- Rao & Kupper (1967): `P(i > j) = pi_i / (pi_i + theta pi_j) = sigmoid(d - eta)`, `P(tie) =
  (theta^2 - 1) pi_i pi_j / ((pi_i + theta pi_j)(theta pi_i + pi_j))`, theta > 1; `tie` = eta =
  log(theta) > 0, the half-width of the reward band read as a tie. P(tie | d = 0) = tanh(eta / 2).

`tie` is a float (fixed by config) or a 0-dim tensor (learned: `rankrm.module` keeps log(tie) as a
parameter and passes `exp` of it, so the tie stays > 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from rankrm.errors import RankrmError
from rankrm.pairs import check_batch, mean_over_lists, pair_diff, pair_mask, tie_mask

Tie = float | Tensor
LOG_2 = math.log(2.0)
Outcome = Callable[[Tensor, Tie], tuple[Tensor, Tensor]]  # d -> (log P(i beats j), log P(tie))


def _log(tie: Tie, like: Tensor) -> Tensor:
    """log(tie) as a tensor of `like`'s dtype (a learned tie keeps its graph)."""
    if isinstance(tie, Tensor):
        return tie.to(like.dtype).log()
    if not (isinstance(tie, (int, float)) and not isinstance(tie, bool) and tie > 0):
        raise RankrmError(f"tie must be a number > 0, got {tie!r}")
    return like.new_tensor(math.log(tie))


def davidson_logprobs(d: Tensor, tie: Tie) -> tuple[Tensor, Tensor]:
    """Davidson: (log P(i beats j), log P(tie)) for reward differences d (any shape)."""
    log_nu = _log(tie, d).expand_as(d)
    lse = torch.logsumexp(torch.stack([d / 2, -d / 2, log_nu]), dim=0)
    return d / 2 - lse, log_nu - lse


def rao_kupper_logprobs(d: Tensor, tie: Tie) -> tuple[Tensor, Tensor]:
    """Rao-Kupper: (log P(i beats j), log P(tie)) for reward differences d (any shape), eta = `tie`."""
    eta = _log(tie, d).exp()  # through the log so a float tie is validated like a tensor one
    # log(theta^2 - 1) = 2 eta + log(1 - e^(-2 eta)); the rest is log of the two denominators / (pi_i pi_j)
    log_tie = (
        2 * eta
        + torch.log(-torch.expm1(-2 * eta))
        - torch.logaddexp(d / 2, eta - d / 2)
        - torch.logaddexp(eta + d / 2, -d / 2)
    )
    return F.logsigmoid(d - eta), log_tie


def bt_ties_nll(rewards: Tensor, labels: Tensor, mask: Tensor, outcome: Outcome, tie: Tie) -> Tensor:
    """Per list, the mean over its untied pairs (i labelled above j: -log P(i beats j)) and its tied
    pairs (each unordered pair once: -log P(tie)), then the mean over lists with >= 1 of either.
    (B, K) -> scalar. Unlike every other loss, an all-tied list is eligible: its ties are evidence."""
    check_batch(rewards, labels, mask)
    win, tied = outcome(pair_diff(rewards, mask), tie)  # (B, K, K) each
    pairs, ties = pair_mask(labels, mask), tie_mask(labels, mask)  # (B, K, K) each
    nll = torch.where(pairs, -win, 0.0).sum(dim=(1, 2)) + torch.where(ties, -tied, 0.0).sum(dim=(1, 2))  # (B,)
    count = pairs.sum(dim=(1, 2)) + ties.sum(dim=(1, 2))  # (B,)
    return mean_over_lists(nll / count.clamp_min(1), count > 0)


def bt_ties_davidson(rewards: Tensor, labels: Tensor, mask: Tensor, *, tie: Tie = 1.0) -> Tensor:
    """Davidson's (1970) Bradley-Terry with ties, `bt_ties_nll` with `davidson_logprobs`: (B, K) -> scalar.
    `tie` = nu > 0 (1.0: P(tie) = 1/3 at equal rewards)."""
    return bt_ties_nll(rewards, labels, mask, davidson_logprobs, tie)


def bt_ties_rao_kupper(rewards: Tensor, labels: Tensor, mask: Tensor, *, tie: Tie = LOG_2) -> Tensor:
    """Rao & Kupper's (1967) Bradley-Terry with ties, `bt_ties_nll` with `rao_kupper_logprobs`: (B, K) ->
    scalar. `tie` = eta = log(theta) > 0 (log 2: theta = 2, P(tie) = 1/3 at equal rewards)."""
    return bt_ties_nll(rewards, labels, mask, rao_kupper_logprobs, tie)
