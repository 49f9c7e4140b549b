"""Ranking losses for reward models trained on ranked lists: one pure function per loss, one registry.

Every loss is `LOSSES[name](rewards, labels, mask, **kwargs) -> scalar tensor` with `rewards (B, K)`
float, `labels (B, K)` float (higher is better, ties allowed), `mask (B, K)` bool (False =
padding); the valid pairs are those of `rankrm.pairs.pair_mask`. A list is *eligible* when it has
at least one valid pair; lists whose real labels all tie carry no ranking information and are left
out of every per-list mean (the tie models, which read ties as evidence, are the one exception).
When no list of the batch is eligible, every loss returns an exact 0 that is still attached to
`rewards` (zero gradient), never NaN. Padded slots may hold any garbage, NaN included: it changes
no value or gradient. Bad kwargs (a config error) raise `RankrmError`.

Every entry also accepts the regularisers `center_coef` (TRL's reward centering) and `l2_coef`
(OpenAssistant's L2 on the rewards), added to any loss (`pointwise.reward_penalty`). An entry may
declare trainable scalars (`Loss.learnable`, e.g. a tie model's `tie`): with `learn_<name>: true`
the LightningModule keeps log(<name>) as a parameter (so it stays > 0), trains it with learning
rate `<name>_lr`, saves it in checkpoints and in the export's `rankrm.json`; called directly, the
configured value is used as is. `LOSSES` maps the Hydra name (`conf/loss/<name>.yaml`) to the entry.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import Tensor

from rankrm.errors import RankrmError
from rankrm.losses.classic import TIE_RULES, lambdarank, listmle, listnet, pairwise, ranklist, ranklist_sigmoid
from rankrm.losses.ndcg import approx_ndcg, lambdaloss, neural_ndcg
from rankrm.losses.pointwise import regression, reward_penalty
from rankrm.losses.ties import (
    Outcome,
    bt_ties_davidson,
    bt_ties_rao_kupper,
    davidson_logprobs,
    rao_kupper_logprobs,
)


@dataclass(frozen=True)
class Loss:
    """A registry entry: the pure loss, the positive scalar kwargs a run may learn, and (tie models) the
    outcome model `(d, tie) -> (log P(i beats j), log P(tie))` the tie metrics read."""

    fn: Callable[..., Tensor]
    learnable: tuple[str, ...] = ()
    outcome: Outcome | None = None

    def split(self, kwargs: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, float]]:
        """Config kwargs -> (the loss's own kwargs, {learned name: its learning rate}).

        `learn_<name>` and `<name>_lr` steer training only and are removed; `<name>` stays (the
        fixed value, or the initial one when learned)."""
        out = dict(kwargs)
        learned = {}
        for name in self.learnable:
            learn, lr = out.pop(f"learn_{name}", False), out.pop(f"{name}_lr", 1e-2)
            if not isinstance(learn, bool):
                raise RankrmError(f"learn_{name} must be true or false, got {learn!r}")
            if not (isinstance(lr, (int, float)) and not isinstance(lr, bool) and lr > 0):
                raise RankrmError(f"{name}_lr must be a number > 0, got {lr!r}")
            if learn:
                learned[name] = float(lr)
        return out, learned

    def __call__(
        self, rewards: Tensor, labels: Tensor, mask: Tensor, *, center_coef: float = 0.0, l2_coef: float = 0.0, **kw
    ) -> Tensor:
        if not (center_coef >= 0 and l2_coef >= 0):
            raise RankrmError(f"center_coef and l2_coef must be >= 0, got {center_coef}, {l2_coef}")
        loss = self.fn(rewards, labels, mask, **self.split(kw)[0])
        if center_coef or l2_coef:  # skipped at 0 so the plain losses stay bit-identical
            loss = loss + reward_penalty(rewards, labels, mask, center_coef, l2_coef)
        return loss


def hybrid(
    rewards: Tensor,
    labels: Tensor,
    mask: Tensor,
    *,
    ranking: str = "ranklist",
    weight: float = 1.0,
    ranking_kwargs: Mapping[str, Any] | None = None,
    regression_kwargs: Mapping[str, Any] | None = None,
) -> Tensor:
    """A ranking loss plus `weight` (lambda >= 0) times `regression`: (B, K) -> scalar.

    `LOSSES[ranking](**ranking_kwargs) + weight * regression(**regression_kwargs)`, the ranking
    loss any entry without trainable parameters. Ranking fixes the order, regression pins each
    list's rewards to its standardised labels (scale and spacing); lambda trades the two.
    """
    entry = LOSSES.get(ranking)
    if entry is None or entry.fn is hybrid or entry.learnable:
        allowed = sorted(n for n, e in LOSSES.items() if e.fn is not hybrid and not e.learnable)
        raise RankrmError(f"hybrid ranking={ranking!r} is not allowed; choices: {', '.join(allowed)}")
    if not weight >= 0:
        raise RankrmError(f"hybrid weight must be >= 0, got {weight}")
    rank = entry(rewards, labels, mask, **dict(ranking_kwargs or {}))
    return rank + float(weight) * regression(rewards, labels, mask, **dict(regression_kwargs or {}))


LOSSES: dict[str, Loss] = {
    "pairwise": Loss(pairwise),
    "ranklist": Loss(ranklist),
    "ranklist_sigmoid": Loss(ranklist_sigmoid),
    "listnet": Loss(listnet),
    "listmle": Loss(listmle),
    "lambdarank": Loss(lambdarank),
    "lambdaloss": Loss(lambdaloss),
    "approx_ndcg": Loss(approx_ndcg),
    "neural_ndcg": Loss(neural_ndcg),
    "regression": Loss(regression),
    "hybrid": Loss(hybrid),
    "bt_ties_davidson": Loss(bt_ties_davidson, ("tie",), davidson_logprobs),
    "bt_ties_rao_kupper": Loss(bt_ties_rao_kupper, ("tie",), rao_kupper_logprobs),
}

__all__ = [
    "LOSSES",
    "TIE_RULES",
    "Loss",
    "approx_ndcg",
    "bt_ties_davidson",
    "bt_ties_rao_kupper",
    "hybrid",
    "lambdaloss",
    "lambdarank",
    "listmle",
    "listnet",
    "neural_ndcg",
    "pairwise",
    "ranklist",
    "ranklist_sigmoid",
    "regression",
]
