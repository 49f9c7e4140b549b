"""The reward model: a transformers backbone, a pooling step and a `Linear(hidden, 1)` head.

    scores = head(dropout(pool(backbone(input_ids, attention_mask))))   # (N,)
    scores = (scores - reward_mean) / reward_std                       # identity unless set

Pooling (`pooling=`):
- `pooler`: the encoder's pooler output (Linear+Tanh on token 0), the BERT/ERNIE default and
  exactly what `BertForSequenceClassification` feeds its `classifier`.
- `cls`: the last hidden state of token 0 (needs right padding).
- `mean`: mean of the hidden states over real tokens (attention mask = 1).
- `last_token`: hidden state of the last real token, found from the ATTENTION MASK, not from
  `pad_token_id`: left and right padding give the same score and pad == eos is safe. Position
  ids are derived from the mask too, so left padding does not shift the positions.
With a pooling other than `pooler` the encoder's pooler is removed (unused weights would get
no gradient, which DDP rejects).

Head: `Linear(hidden, 1)`, with dropout before it as in BertForSequenceClassification
(`classifier_dropout` or `hidden_dropout_prob`; 0 for decoders). Decoders use `head_bias=False`
because transformers' decoder heads have no bias (export); ranking losses ignore a shift.

How the N sequences of a batch go through the backbone (one padded block, or length buckets) is
the `encoding` strategy (`rankrm.encoding`); the model scores one padded block (`score_block`).
What trains (freeze modes, LoRA) is set where the backbone is built (`rankrm.freeze`).

Reward normalisation: `set_reward_norm(mean, std)` stores the mean/std of the RAW scores on
a reference set (saved in the state dict as extra state); `forward` then returns normalised
scores. Compute the statistics with `forward(..., normalize=False)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, get_args

import torch
from torch import nn

from rankrm.config.schema import Pooling
from rankrm.encoding import Encoding, make_encoding
from rankrm.errors import RankrmError
from rankrm.freeze import has_lora

POOLINGS = get_args(Pooling)  # backbone.pooling choices; the schema is their one home


class RewardModel(nn.Module):
    """Backbone + pooling + scalar head: `forward(input_ids, attention_mask, token_type_ids) -> (N,)`."""

    def __init__(
        self,
        backbone: nn.Module,
        pooling: str = "pooler",
        head_bias: bool = True,
        head_dropout: float = 0.0,
        backbone_name: str = "",
        encoding: Encoding | None = None,
    ) -> None:
        super().__init__()
        if pooling == "pooler" and getattr(backbone, "pooler", None) is None:
            raise RankrmError(
                f"pooling 'pooler' needs an encoder with a pooler layer (BERT/ERNIE); "
                f"{type(backbone).__name__} has none: use pooling=cls, mean or last_token"
            )
        if pooling != "pooler" and getattr(backbone, "pooler", None) is not None:
            # An unused pooler would get no gradient (DDP complains) and cost a matmul.
            backbone.pooler = None
        if getattr(backbone.config, "use_cache", False):
            # A reward model never generates: without this a decoder builds a KV cache in every forward
            # (held with the outputs in eval, and refused with a warning under gradient checkpointing).
            backbone.config.use_cache = False
        self.backbone = backbone
        self.pooling = pooling
        self.backbone_name = backbone_name
        self.encoding: Encoding = make_encoding() if encoding is None else encoding
        config = backbone.config
        self.dropout = nn.Dropout(head_dropout)
        self.head = nn.Linear(config.hidden_size, 1, bias=head_bias)
        # Same init as transformers' classification heads.
        nn.init.normal_(self.head.weight, std=getattr(config, "initializer_range", 0.02))
        if self.head.bias is not None:
            nn.init.zeros_(self.head.bias)
        # Python floats (not buffers): exact, and not cast by model.to(bfloat16); saved in the
        # state dict through get_extra_state.
        self.reward_mean, self.reward_std = 0.0, 1.0

    @property
    def base_model(self) -> nn.Module:
        """The transformers base model (unwrapped from peft when LoRA is on)."""
        bb = self.backbone
        return bb.get_base_model() if hasattr(bb, "get_base_model") else bb

    @property
    def has_lora(self) -> bool:
        return has_lora(self.backbone)

    @property
    def length_buckets(self) -> int:
        """Blocks a batch is encoded in (1: one padded block); setting it switches the encoding (as
        `backbone.length_buckets` does at build time; tests and scripts/bench_buckets.py compare values)."""
        return getattr(self.encoding, "buckets", 1)

    @length_buckets.setter
    def length_buckets(self, n: int) -> None:
        self.encoding = make_encoding(n)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        normalize: bool = True,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (N, T) -> scores (N,); normalised unless `normalize=False`."""
        scores = self.encoding(self, input_ids, attention_mask, token_type_ids)  # (N,) raw
        if normalize and (self.reward_mean, self.reward_std) != (0.0, 1.0):
            scores = (scores - self.reward_mean) / self.reward_std
        return scores

    def score_block(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
    ) -> torch.Tensor:
        """Raw scores (N,) of one padded block (N, T)."""
        kwargs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask}
        if token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.pooling == "last_token":
            # Positions count real tokens only, so a left-padded row sees the same positions
            # as its right-padded twin (pads get position 0, they are masked anyway).
            kwargs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # (N, T)
        out = self.backbone(**kwargs)
        pooled = self._pool(out, attention_mask)  # (N, H)
        return self.head(self.dropout(pooled)).squeeze(-1)  # (N, 1) -> (N,)

    def _pool(self, out: Any, attention_mask: torch.Tensor) -> torch.Tensor:
        """Backbone output + mask (N, T) -> pooled features (N, H)."""
        if self.pooling == "pooler":
            return out.pooler_output
        hidden = out.last_hidden_state  # (N, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.to(hidden.dtype).unsqueeze(-1)  # (N, T, 1)
        if self.pooling == "mean":
            return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        positions = torch.arange(hidden.shape[1], device=hidden.device)  # (T,)
        last = (positions * attention_mask.long()).argmax(-1)  # (N,) index of the last real token
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]

    # ---- reward normalisation ---------------------------------------------------------------

    def set_reward_norm(self, mean: float, std: float) -> None:
        """Make forward return (raw - mean) / std; mean/std are of RAW scores on a reference set."""
        mean, std = float(mean), float(std)
        if not (math.isfinite(mean) and math.isfinite(std)) or std <= 0:
            raise RankrmError(
                f"cannot normalise rewards with mean={mean}, std={std}: the reference scores are "
                "constant or not finite (set backbone.normalize_rewards=false)"
            )
        self.reward_mean, self.reward_std = mean, std

    @property
    def reward_norm(self) -> tuple[float, float]:
        """(mean, std) applied in forward; (0.0, 1.0) when unset."""
        return self.reward_mean, self.reward_std

    def get_extra_state(self) -> dict[str, float]:
        return {"reward_mean": self.reward_mean, "reward_std": self.reward_std}

    def set_extra_state(self, state: dict[str, float]) -> None:
        self.reward_mean, self.reward_std = float(state["reward_mean"]), float(state["reward_std"])

    def trainable_parameter_names(self) -> Sequence[str]:
        """Names of the parameters that require grad (for logs and tests)."""
        return [n for n, p in self.named_parameters() if p.requires_grad]
