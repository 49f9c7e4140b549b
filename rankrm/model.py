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

How the N sequences of a batch go through the backbone (one padded block, length buckets, or packed
rows) is the `encoding` strategy (`rankrm.encoding`); the model scores one padded block (`score_block`)
or one set of packed rows (`score_packed`: the same pooling, on each sequence's slots in the rows).
What trains (freeze modes, LoRA) is set where the backbone is built (`rankrm.freeze`).

Reward normalisation: `set_reward_norm(mean, std)` stores the mean/std of the RAW scores on
a reference set (saved in the state dict as extra state); `forward` then returns normalised
scores. Compute the statistics with `forward(..., normalize=False)`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import SimpleNamespace
from typing import Any, get_args

import torch
from torch import nn

from rankrm.config.schema import Pooling
from rankrm.encoding import Encoding, Tokens, make_encoding
from rankrm.errors import RankrmError
from rankrm.freeze import has_lora
from rankrm.packing import Lists, PackedRows

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
        # Decoder attention, as transformers' attention modules declare it (packing builds causal masks then).
        self.causal = any(getattr(m, "is_causal", False) is True for m in backbone.modules())
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
    def attn_implementation(self) -> str | None:
        """transformers' attention kernel of the backbone (sdpa, eager, flex_attention, flash_attention_2...)."""
        return getattr(self.base_model.config, "_attn_implementation", None)

    @property
    def sliding_window(self) -> int | None:
        """Span of the backbone's sliding-window attention (Mistral-like configs); None: full attention."""
        return getattr(self.base_model.config, "sliding_window", None)

    @property
    def dtype(self) -> torch.dtype:
        return self.head.weight.dtype

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
        lists: Lists | None = None,
    ) -> torch.Tensor:
        """input_ids, attention_mask, token_type_ids: (N, T) -> scores (N,); normalised unless `normalize=False`.
        `lists` (which rows form one list) lets `packing=shared_prompt` store each list's longest common prefix once."""
        scores, _ = self.encode(input_ids, attention_mask, token_type_ids, lists)
        return self.normalized(scores) if normalize else scores

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        lists: Lists | None = None,
    ) -> tuple[torch.Tensor, Tokens]:
        """Raw scores (N,) and the cells the backbone ran over (real tokens, padded slots)."""
        return self.encoding(self, input_ids, attention_mask, token_type_ids, lists)

    def normalized(self, scores: torch.Tensor) -> torch.Tensor:
        """Raw scores -> (scores - reward_mean) / reward_std (the identity until a norm is set)."""
        if (self.reward_mean, self.reward_std) == (0.0, 1.0):
            return scores
        return (scores - self.reward_mean) / self.reward_std

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

    def score_packed(self, rows: PackedRows) -> torch.Tensor:
        """Raw scores (N,) of the sequences packed into `rows` (`rankrm.packing`): one backbone call with the
        kernel's block mask and the per-sequence positions, then `_pool` on each sequence's own slots."""
        kwargs: dict[str, Any] = {"input_ids": rows.input_ids, "position_ids": rows.position_ids, **rows.kwargs}
        kwargs["attention_mask"] = rows.attention_mask
        if rows.token_type_ids is not None:
            kwargs["token_type_ids"] = rows.token_type_ids
        hidden = self.backbone(**kwargs).last_hidden_state.flatten(0, 1)  # (R, W, H) -> (R * W, H)
        lengths = rows.lengths
        if self.pooling == "mean":  # every token of the sequence, its shared prompt included
            index = rows.index
            mask = torch.arange(index.shape[1], device=index.device) < lengths[:, None]  # (N, L)
        else:  # the one slot the pooling reads: the first token, or the last
            col = (lengths - 1) if self.pooling == "last_token" else torch.zeros_like(lengths)
            index, mask = rows.index.gather(1, col[:, None]), torch.ones_like(lengths)[:, None]  # (N, 1)
        seqs = hidden[index]  # (N, L or 1, H): each sequence's hidden states, as if it had been alone
        pooler = self.base_model.pooler if self.pooling == "pooler" else None
        out = SimpleNamespace(last_hidden_state=seqs, pooler_output=None if pooler is None else pooler(seqs))
        return self.head(self.dropout(self._pool(out, mask))).squeeze(-1)  # (N, 1) -> (N,)

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
