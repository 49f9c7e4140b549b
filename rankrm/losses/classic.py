"""The first six losses: Bradley-Terry pairs, InstructGPT's ranked list (and the seed's bare-sigmoid
variant), ListNet, ListMLE and LambdaRank. The batch contract is in `rankrm.losses`."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from rankrm.errors import RankrmError
from rankrm.pairs import (
    check_batch,
    ideal_dcg,
    linear_gain,
    list_pair_mean,
    masked,
    mean_over_lists,
    pair_diff,
    pair_margin,
    pair_mask,
    pooled_pair_mean,
    shared_discount,
)

TIE_RULES = ("breslow", "random")


def _margin_diffs(
    rewards: Tensor, labels: Tensor, mask: Tensor, margin: float, margin_mode: str
) -> tuple[Tensor, Tensor]:
    """Valid pairs (B, K, K) bool and margin-shifted differences r_i - r_j - m_ij (B, K, K)."""
    check_batch(rewards, labels, mask)
    pairs = pair_mask(labels, mask)
    return pairs, pair_diff(rewards, mask) - pair_margin(labels.to(rewards.dtype), mask, margin, margin_mode)


def pairwise(
    rewards: Tensor, labels: Tensor, mask: Tensor, *, margin: float = 0.0, margin_mode: str = "constant"
) -> Tensor:
    """Bradley-Terry loss pooled over pairs: mean over ALL valid pairs of the batch of
    `-logsigmoid(r_i - r_j - m_ij)` (B, K) -> scalar.

    This is what TRL's RewardTrainer computes once lists are expanded to pairs. Pooling weighs
    each prompt by its pair count (C(K, 2) for a strict K-list), so long lists dominate;
    `ranklist` weighs prompts equally. `m_ij` is `margin` ("constant") or
    `margin * (labels_i - labels_j)` ("label_gap", Llama 2 style).
    """
    pairs, diff = _margin_diffs(rewards, labels, mask, margin, margin_mode)
    return pooled_pair_mean(-F.logsigmoid(diff), pairs)


def ranklist(
    rewards: Tensor, labels: Tensor, mask: Tensor, *, margin: float = 0.0, margin_mode: str = "constant"
) -> Tensor:
    """Corrected ranked-list loss, InstructGPT (Ouyang et al. 2022) eq. 1: (B, K) -> scalar.

    Per list, the mean over its valid pairs of `-logsigmoid(r_i - r_j - m_ij)` (the 1/C(K, 2)
    factor, generalised to 1/#pairs when labels tie); then the mean over eligible lists, so
    every prompt weighs the same whatever its K. Margin as in `pairwise`.
    """
    pairs, diff = _margin_diffs(rewards, labels, mask, margin, margin_mode)
    return mean_over_lists(list_pair_mean(-F.logsigmoid(diff), pairs), pairs.any(dim=(1, 2)))


def ranklist_sigmoid(
    rewards: Tensor, labels: Tensor, mask: Tensor, *, margin: float = 0.0, margin_mode: str = "constant"
) -> Tensor:
    """The popular but wrong ranked-list loss, kept ONLY for ablation: (B, K) -> scalar.

    Per list `-(mean over valid pairs of sigmoid(r_i - r_j - m_ij))`, then the mean over
    eligible lists (the seed article's code pooled its count over the batch instead; equal for
    equal-length strict lists). Why it is wrong: the log is missing (as a reader of the seed
    article pointed out), so it is not a (negative log) likelihood, it is bounded in [-1, 0],
    and its gradient sigmoid'(d) = s(1 - s) vanishes for badly mis-ordered pairs (d -> -inf)
    just as for well-ordered ones, so the worst mistakes get the least correction.
    """
    pairs, diff = _margin_diffs(rewards, labels, mask, margin, margin_mode)
    return mean_over_lists(-list_pair_mean(torch.sigmoid(diff), pairs), pairs.any(dim=(1, 2)))


def _masked_log_softmax(x: Tensor, mask: Tensor) -> Tensor:
    """log_softmax over the real slots of each row: (B, K) -> (B, K), 0 in padded slots."""
    # finfo.min instead of -inf keeps an all-padded row finite (uniform) so no NaN gradient.
    logits = masked(x, mask, torch.finfo(x.dtype).min)
    return masked(logits.log_softmax(dim=-1), mask)


def listnet(rewards: Tensor, labels: Tensor, mask: Tensor, *, temperature: float = 1.0) -> Tensor:
    """ListNet top-one loss (Cao et al. 2007): (B, K) -> scalar.

    Per list, the cross-entropy `-sum_i p_i log q_i` between the target top-one distribution
    `p = softmax(labels / temperature)` and `q = softmax(rewards)`, both over the real slots;
    then the mean over eligible lists (an all-tied list has a uniform target and no ranking
    information, so it is excluded as everywhere else). Lower temperature sharpens the target.
    """
    check_batch(rewards, labels, mask)
    if not temperature > 0:
        raise RankrmError(f"listnet temperature must be > 0, got {temperature}")
    target = _masked_log_softmax(labels.to(rewards.dtype) / temperature, mask).exp()
    target = masked(target, mask)  # exp(0) = 1 in padded slots: zero them
    cross_entropy = -(target * _masked_log_softmax(rewards, mask)).sum(dim=-1)  # (B,)
    return mean_over_lists(cross_entropy, pair_mask(labels, mask).any(dim=(1, 2)))


def _label_order(labels: Tensor, mask: Tensor, ties: str, seed: int, generator: torch.Generator | None) -> Tensor:
    """Slots sorted best label first, padded last: (B, K) -> (B, K) long."""
    lab = masked(labels, mask, float("-inf"))
    if ties != "random":
        return lab.argsort(dim=-1, descending=True, stable=True)
    if generator is None:  # a private generator: never touches (or depends on) the global RNG
        generator = torch.Generator(device=labels.device).manual_seed(int(seed))
    shuffle = torch.rand(lab.shape, generator=generator, device=labels.device).argsort(dim=-1)
    # A stable sort of randomly shuffled slots breaks label ties uniformly at random.
    return shuffle.gather(1, lab.gather(1, shuffle).argsort(dim=-1, descending=True, stable=True))


def listmle(
    rewards: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    ties: str = "breslow",
    seed: int = 0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """ListMLE (Xia et al. 2008): Plackett-Luce negative log-likelihood of the label order.

    (B, K) -> scalar. With the real slots sorted best first (pi), per list
    `sum_p [log sum_{q >= p} exp r_pi(q) - r_pi(p)]` (summed, not averaged, over positions;
    computed with one logcumsumexp), then the mean over eligible lists.

    Label ties (`ties`):
      "breslow" (default): Breslow's tie rule from the Cox partial likelihood; each tied item's
        denominator runs over its whole tie group and everything below it. Deterministic, no
        RNG, invariant to the slot order; equals plain ListMLE when there are no ties.
      "random": ties broken by a uniformly random order drawn from `generator`, or from a
        private `torch.Generator` seeded with `seed` (the global RNG is never used). With a
        fixed `seed` the same slot pattern is broken the same way at every call; pass a
        seeded `generator` to draw a fresh (still reproducible) tie-break at every step.
    """
    check_batch(rewards, labels, mask)
    if ties not in TIE_RULES:
        raise RankrmError(f"listmle ties must be one of {TIE_RULES}, got {ties!r}")
    order = _label_order(labels, mask, ties, seed, generator)  # (B, K)
    real = mask.gather(1, order)  # (B, K): real slots come first
    r = masked(rewards, mask).gather(1, order)  # (B, K) rewards in label order
    # finfo.min (not -inf) keeps padded tails out of the sums without NaN gradients.
    tail_lse = masked(r, real, torch.finfo(r.dtype).min).flip(-1).logcumsumexp(-1).flip(-1)  # (B, K)
    if ties == "breslow":
        lab = masked(labels, mask).gather(1, order)  # (B, K)
        pos = torch.arange(lab.shape[-1], device=lab.device).expand_as(lab)  # (B, K)
        opens_group = torch.cat([torch.ones_like(real[:, :1]), lab[:, 1:] != lab[:, :-1]], dim=-1)
        group_start = torch.where(opens_group, pos, 0).cummax(dim=-1).values  # (B, K)
        tail_lse = tail_lse.gather(1, group_start)
    nll = masked(tail_lse - r, real).sum(dim=-1)  # (B,)
    return mean_over_lists(nll, pair_mask(labels, mask).any(dim=(1, 2)))


def reward_positions(rewards: Tensor, gain: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Where each item sits in the current reward order: (B, K) -> ahead (B, K), group (B, K) long.

    `ahead` counts the real items ranked strictly before it, `group` the items it is interchangeable
    with (itself included), so it occupies one of the positions [ahead, ahead + group)."""
    r = masked(rewards.detach(), mask)
    # Reward ties are broken pessimistically (worse label ranked first), so exactly tied rewards
    # (e.g. a fresh zero-initialised head) still get distinct positions and non-zero weights.
    # Items tied in reward AND label are interchangeable and share their positions' mean
    # discount, which keeps the loss and its gradient independent of the slot order.
    r_k, r_i, g_k, g_i = r.unsqueeze(1), r.unsqueeze(2), gain.unsqueeze(1), gain.unsqueeze(2)  # [b, i, k]
    real_k = mask.unsqueeze(1)  # (B, 1, K)
    ahead = (real_k & ((r_k > r_i) | ((r_k == r_i) & (g_k < g_i)))).sum(dim=-1)  # (B, K)
    group = (real_k & (r_k == r_i) & (g_k == g_i)).sum(dim=-1)  # (B, K)
    return ahead, group


def lambda_weights(rewards: Tensor, gain: Tensor, mask: Tensor) -> Tensor:
    """|delta NDCG| of swapping i and j in the current reward order: (B, K) gains -> (B, K, K)."""
    ahead, group = reward_positions(rewards, gain, mask)
    disc = shared_discount(ahead, group, [None], rewards.dtype)[0]  # (B, K)
    g_i, g_k = gain.unsqueeze(2), gain.unsqueeze(1)
    swap = (g_i - g_k).abs() * (disc.unsqueeze(2) - disc.unsqueeze(1)).abs()  # (B, K, K)
    idcg = ideal_dcg(gain, [None])  # (B, 1); 0 only for lists without pairs
    return swap / masked(idcg, idcg > 0, 1.0).unsqueeze(-1)  # (B, K, K)


def lambdarank(rewards: Tensor, labels: Tensor, mask: Tensor, *, sigma: float = 1.0) -> Tensor:
    """NDCG-weighted pairwise loss: LambdaRank (Burges et al. 2006) written as an explicit
    weighted loss, as analysed in LambdaLoss (Wang et al. 2018): (B, K) -> scalar.

    Per list, `sum_{valid pairs} w_ij * -logsigmoid(sigma * (r_i - r_j)) / #pairs`, then the
    mean over eligible lists. `w_ij = |g_i - g_j| * |D(pos_i) - D(pos_j)| / IDCG` is the NDCG
    change from swapping i and j in the current reward order (gain `linear_gain`, discount
    1/log2(pos + 2); reward ties ranked worse-label first, items tied in both reward and label
    share their mean discount); weights are detached.
    """
    check_batch(rewards, labels, mask)
    if not sigma > 0:
        raise RankrmError(f"lambdarank sigma must be > 0, got {sigma}")
    pairs = pair_mask(labels, mask)
    with torch.no_grad():
        weights = lambda_weights(rewards, linear_gain(labels, mask).to(rewards.dtype), mask)  # (B, K, K)
    nll = -F.logsigmoid(float(sigma) * pair_diff(rewards, mask))
    return mean_over_lists(list_pair_mean(weights * nll, pairs), pairs.any(dim=(1, 2)))
