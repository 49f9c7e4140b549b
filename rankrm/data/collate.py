"""Collation of encoded lists into the batch contract, and the padded-token accounting.

A batch of B lists with K_b responses each becomes
  input_ids (N, T) long, attention_mask (N, T) long, [token_type_ids (N, T) long],
  labels (B, K_max) float, mask (B, K_max) bool,
with N = sum_b K_b = mask.sum(): only real responses are encoded, in row-major order of the
unmasked slots (list 0's responses, then list 1's, ...), so the module can put the N scores
back with `rewards.masked_scatter(mask, scores)`. T is the longest sequence in the batch
(dynamic padding) and padding goes on the tokenizer's `padding_side`.

The collator reads a `SeqBatch`: the N sequences as (start, length) slices of one flat token
array. The data module's batches slice the token cache's memory maps (`items.SplitItems`), so
only the batch's own tokens are read; a list of `EncodedList`s (scoring) is flattened first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from rankrm.data.tokenize import EncodedList


@dataclass
class SeqBatch:
    """B lists' N sequences as slices of flat arrays, row-major over the lists."""

    tokens: np.ndarray  # flat token ids (a cache's map, or the batch's own ids back to back)
    types: np.ndarray | None  # flat token type ids alike, or None
    starts: np.ndarray  # (N,) where each sequence starts in `tokens`
    lens: np.ndarray  # (N,) its length
    k: np.ndarray  # (B,) sequences per list
    labels: np.ndarray  # (N,) the label of each sequence's response

    @classmethod
    def of_encoded(cls, items: Sequence[EncodedList]) -> SeqBatch:
        seqs = [s for it in items for s in it.ids]
        lens = np.array([len(s) for s in seqs], dtype=np.int64)
        starts = np.concatenate([[0], np.cumsum(lens)[:-1]]).astype(np.int64)
        types = None
        if items[0].type_ids is not None:
            types = np.concatenate([np.asarray(t, dtype=np.int64) for it in items for t in it.type_ids])
        return cls(
            np.concatenate([np.asarray(s, dtype=np.int64) for s in seqs]),
            types,
            starts,
            lens,
            np.array([it.k for it in items], dtype=np.int64),
            np.array([x for it in items for x in it.labels], dtype=np.float64),
        )


class RankCollator:
    """Callable `collate_fn` for a DataLoader: a `SeqBatch` (or a list of `EncodedList`s) -> tensors."""

    def __init__(self, pad_token_id: int, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def _where(self, lens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(N, T) real-token mask and the offset into its sequence each slot reads (clamped)."""
        width = int(lens.max())
        pos = np.arange(width)[None, :]  # (1, T)
        shift = (width - lens)[:, None] if self.padding_side == "left" else np.zeros((len(lens), 1), np.int64)
        rel = pos - shift  # (N, T) index into the sequence; out of [0, len) on padding
        real = (rel >= 0) & (rel < lens[:, None])
        return real, np.clip(rel, 0, np.maximum(lens - 1, 0)[:, None])

    def __call__(self, items: SeqBatch | Sequence[EncodedList]) -> dict[str, torch.Tensor]:
        b = items if isinstance(items, SeqBatch) else SeqBatch.of_encoded(items)
        real, rel = self._where(b.lens)
        src = b.starts[:, None] + rel  # (N, T) flat position of each slot's token
        batch = {
            "input_ids": torch.from_numpy(np.where(real, b.tokens[src], self.pad_token_id).astype(np.int64)),
            "attention_mask": torch.from_numpy(real.astype(np.int64)),
        }
        if b.types is not None:
            batch["token_type_ids"] = torch.from_numpy(np.where(real, b.types[src], 0).astype(np.int64))  # (N, T)
        k_max = int(b.k.max())
        mask = np.arange(k_max)[None, :] < b.k[:, None]  # (B, K_max)
        labels = np.zeros(mask.shape, dtype=np.float32)
        labels[mask] = b.labels  # row-major: list 0's responses, then list 1's, ...
        batch["labels"], batch["mask"] = torch.from_numpy(labels), torch.from_numpy(mask)
        return batch


def padding_counts(
    batches: Sequence[Sequence[int] | np.ndarray], k: np.ndarray, n_tokens: np.ndarray, max_len: np.ndarray
) -> tuple[int, int]:
    """(real tokens, padded slots) over `batches` of item indices, as the collator pads them,
    from each item's sequence count `k`, token count and longest sequence."""
    if not batches:
        return 0, 0
    order = np.concatenate(batches).astype(np.int64)
    starts = np.concatenate([[0], np.cumsum([len(b) for b in batches])[:-1]]).astype(np.int64)
    real = np.add.reduceat(n_tokens[order], starts)  # per batch
    rows = np.add.reduceat(k[order], starts)
    width = np.maximum.reduceat(max_len[order], starts)
    return int(real.sum()), int((rows * width - real).sum())
