"""Collation of encoded lists into the batch contract, and the padded-token accounting.

A batch of B lists with K_b responses each becomes
  input_ids (N, T) long, attention_mask (N, T) long, [token_type_ids (N, T) long],
  labels (B, K_max) float, mask (B, K_max) bool, [prompt_lengths (N,) long],
with N = sum_b K_b = mask.sum(): only real responses are encoded, in row-major order of the
unmasked slots (list 0's responses, then list 1's, ...), so the module can put the N scores
back with `rewards.masked_scatter(mask, scores)`. T is the longest sequence in the batch
(dynamic padding) and padding goes on the tokenizer's `padding_side`. `prompt_lengths` (tokens before each
response, when tokenisation recorded them) let `backbone.packing=shared_prompt` store each prompt once.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rankrm.data.tokenize import EncodedList


class RankCollator:
    """Callable `collate_fn` for a DataLoader over `EncodedList`s (picklable for workers)."""

    def __init__(self, pad_token_id: int, padding_side: str = "right") -> None:
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        self.pad_token_id = int(pad_token_id)
        self.padding_side = padding_side

    def _pad(self, seqs: list[list[int]], width: int, value: int) -> torch.Tensor:
        """(N, width) long tensor of `seqs` padded with `value` on `padding_side`."""
        out = torch.full((len(seqs), width), value, dtype=torch.long)
        for r, s in enumerate(seqs):
            if self.padding_side == "right":
                out[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        return out

    def __call__(self, items: Sequence[EncodedList]) -> dict[str, torch.Tensor]:
        seqs = [s for it in items for s in it.ids]  # N sequences, row-major over lists
        width = max(len(s) for s in seqs)
        k_max = max(it.k for it in items)
        batch = {
            "input_ids": self._pad(seqs, width, self.pad_token_id),  # (N, T)
            "attention_mask": self._pad([[1] * len(s) for s in seqs], width, 0),  # (N, T)
        }
        if items[0].type_ids is not None:
            batch["token_type_ids"] = self._pad([t for it in items for t in it.type_ids], width, 0)  # (N, T)
        if all(it.prompt_lens is not None for it in items):
            batch["prompt_lengths"] = torch.tensor([p for it in items for p in it.prompt_lens])  # (N,)
        labels = torch.zeros(len(items), k_max, dtype=torch.float32)  # (B, K_max)
        mask = torch.zeros(len(items), k_max, dtype=torch.bool)  # (B, K_max)
        for b, it in enumerate(items):
            labels[b, : it.k] = torch.tensor(it.labels, dtype=torch.float32)
            mask[b, : it.k] = True
        batch["labels"], batch["mask"] = labels, mask
        return batch


def padding_counts(batches: Sequence[Sequence[int]], items: Sequence[EncodedList]) -> tuple[int, int]:
    """(real tokens, padded slots) over `batches` of item indices, as the collator would pad them."""
    real = padded = 0
    for idx in batches:
        lens = [len(s) for i in idx for s in items[i].ids]
        real += sum(lens)
        padded += len(lens) * max(lens) - sum(lens)
    return real, padded
