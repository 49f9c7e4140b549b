"""`backbone.attn_implementation: sdpa_varlen`: packed rows with SDPA over each sequence's own tokens.

The packed batch is one row (no empty slot in any linear layer, as with flash-attn varlen). In each
attention layer the queries of every sequence are gathered with the keys they may see into small blocks
-- a sequence's own tokens with its list's shared prefix before them, and each shared prefix's own
tokens -- and one SDPA call per kind of block runs over (blocks, heads, queries, keys) with a boolean mask;
the outputs go back to their slots. It is the varlen counterpart of the dense block mask for kernels
that cannot skip masked cells (SDPA on the CPU): attention costs the sum over blocks of queries x keys
(each call padded to its largest block) instead of R W^2, and unlike flash-attn varlen a sequence may see
a shared prefix, so `shared_prompt` runs on it. The gathers copy each layer's keys and values once per
sequence that sees them (a list's prefix K times): memory of the order of the unshared batch's K/V, for
one layer at a time.

It is registered in transformers' attention interface under the name `sdpa_varlen` (`register`), with no
mask function: it only runs under `backbone.packing` (lists or shared_prompt), which hands it the blocks.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor

from rankrm.config.packing import VARLEN as NAME
from rankrm.errors import RankrmError

if TYPE_CHECKING:  # type hints only: rankrm.packing calls this module (a run-time import would be a cycle)
    from rankrm.packing import Built, Layout


@dataclass(frozen=True)
class Blocks:
    """Blocks of queries with the keys they see, as slots of the one packed row."""

    q: Tensor  # (U, Tq) slot of each query; padding repeats a real slot
    k: Tensor  # (U, Tk) slot of each key
    mask: Tensor  # (U, 1, Tq, Tk) True: the query sees the key; padded query rows see key 0 (no empty softmax)
    q_valid: Tensor  # (U, Tq) which queries are real


def _block(slots: Tensor, q_pos: Tensor, n_keys: Tensor, causal: bool) -> Blocks:
    """Blocks whose keys are `slots` (U, Tk) of tokens 0.. of one sequence (n_keys real) and whose queries
    are its tokens at `q_pos` (U, Tq); a query sees the real keys, the earlier ones only when causal."""
    k_pos = torch.arange(slots.shape[1], device=slots.device)  # (Tk,)
    q_valid = q_pos < n_keys[:, None]  # (U, Tq)
    sees = k_pos[None, None, :] < n_keys[:, None, None]  # (U, 1, Tk)
    if causal:
        sees = sees & (k_pos[None, None, :] <= q_pos[:, :, None])  # (U, Tq, Tk)
    sees = sees.expand(-1, q_pos.shape[1], -1) | (~q_valid[:, :, None] & (k_pos == 0))
    q = slots.gather(1, q_pos.clamp(max=slots.shape[1] - 1))  # (U, Tq)
    return Blocks(q, slots, sees[:, None], q_valid)


def blocks(layout: Layout, causal: bool, dtype: torch.dtype, device: torch.device) -> Built:
    """The kernel's arguments for a one-row layout: no mask, the blocks as the `rankrm_blocks` keyword."""
    if layout.rows != 1:
        raise RankrmError("sdpa_varlen needs the packed batch in one row")
    index, lengths, prefix = layout.index.to(device), layout.lengths.to(device), layout.prefix.to(device)
    own = int((lengths - prefix).max())
    # Every sequence: its own tokens p.. as queries, all its tokens (shared prefix first) as keys.
    calls = [_block(index, prefix[:, None] + torch.arange(own, device=device), lengths, causal)]
    # The sequences of a group with a shared prefix start at the same slot: the first of each such run.
    firsts = torch.nonzero(index[:, 0].diff(prepend=index[:1, 0] - 1) != 0).squeeze(1)
    shared = firsts[prefix[firsts] > 0]
    if len(shared):  # every shared prefix: its own tokens, causally
        p = prefix[shared]
        width = int(p.max())
        calls.append(
            _block(index[shared, :width], torch.arange(width, device=device).expand(len(shared), -1), p, causal)
        )
    return None, {"rankrm_blocks": tuple(calls)}


def varlen_sdpa(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    rankrm_blocks: tuple[Blocks, ...] | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention-function signature: query (1, H, L, D), key/value (1, H_kv, L, D) -> (1, L, H, D)."""
    if rankrm_blocks is None:
        raise RankrmError("attn_implementation=sdpa_varlen runs only with backbone.packing=lists or shared_prompt")
    heads = query.shape[1]
    if key.shape[1] != heads:  # grouped-query attention: each key/value head serves heads / H_kv query heads
        key = key.repeat_interleave(heads // key.shape[1], dim=1)
        value = value.repeat_interleave(heads // value.shape[1], dim=1)
    q, k, v = query[0], key[0], value[0]  # (H, L, D)
    out = torch.zeros_like(q)  # (H, L, D)
    for b in rankrm_blocks:
        o = F.scaled_dot_product_attention(
            q[:, b.q].transpose(0, 1),  # (H, U, Tq, D) -> (U, H, Tq, D)
            k[:, b.k].transpose(0, 1),
            v[:, b.k].transpose(0, 1),
            attn_mask=b.mask,
            dropout_p=dropout,
            scale=scaling,
        )  # (U, H, Tq, D)
        out[:, b.q[b.q_valid]] = o.transpose(0, 1)[:, b.q_valid]  # each slot is the query of one block
    return out.transpose(0, 1)[None].contiguous(), None  # (1, L, H, D)


def register() -> None:
    """Make `sdpa_varlen` an attention implementation transformers accepts (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_sdpa)
