"""The one record type every reader produces."""

from __future__ import annotations

from dataclasses import dataclass

Message = dict[str, str]  # {"role": ..., "content": ...}
Prompt = str | list[Message] | None


@dataclass(frozen=True)
class RankedList:
    """A prompt (optional) and K >= 2 responses with labels, higher = better (ties allowed).

    A plain best-to-worst list gets labels K-1, ..., 0. `prompt` is plain text or, for chat
    data, a list of messages (then each response is the assistant's reply and the collator
    applies the tokenizer's chat template). `source` is "file:line" for error messages.
    """

    responses: tuple[str, ...]
    labels: tuple[float, ...]
    prompt: Prompt = None
    source: str = ""

    @property
    def k(self) -> int:
        return len(self.responses)

    @property
    def n_pairs(self) -> int:
        """Ordered pairs with a strict label difference (tied labels make no pair)."""
        ls = self.labels
        return sum(1 for i in range(len(ls)) for j in range(len(ls)) if ls[i] > ls[j])
