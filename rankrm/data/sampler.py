"""Batch sampler over lists: fixed lists-per-batch or a token budget, length-grouped or random,
deterministic under a seed, and sharded across DDP ranks by itself.

Length grouping sorts the lists by their longest response (ties in a seeded random order),
cuts the sorted order into batches and shuffles the order of the batches, so each batch holds
lists of similar length (little padding) while the batch sequence is random. The epoch's
batches are computed identically on every rank; rank r takes batches r, r+R, r+2R, ... and the
last round is topped up by wrapping around, so all ranks run the same number of steps.
Because it shards by itself the Trainer must not inject a DistributedSampler:
`Trainer(use_distributed_sampler=False)` (Lightning otherwise refuses this sampler with a TypeError).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler

from rankrm.errors import RankrmError


class ListBatchSampler(Sampler[list[int]]):
    """Yields lists of item indices (one batch each).

    Args:
        sizes: per item (K responses, longest response in tokens).
        batch_size: lists per batch (used when `max_tokens` is None).
        max_tokens: padded-token budget per batch (rows x longest row); needs `length_grouping`.
        shuffle: shuffle per epoch (train) or a fixed order (val/test).
        length_grouping: group lists of similar length (else random batches).
        seed: base seed; epoch e uses the generator seeded with (seed, e).
        num_replicas, rank: DDP world size and this process's rank.
    """

    def __init__(self, sizes: Sequence[tuple[int, int]], batch_size: int = 8, max_tokens: int | None = None,
                 shuffle: bool = True, length_grouping: bool = True, seed: int = 0,
                 num_replicas: int = 1, rank: int = 0) -> None:
        if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
            raise RankrmError(f"data.batch_size and data.max_tokens must be >= 1, got {batch_size}, {max_tokens}")
        if max_tokens is not None and not length_grouping:
            raise RankrmError("data.max_tokens needs data.length_grouping=true (a stable number of batches per epoch)")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world size {num_replicas}")
        self.sizes = [(int(k), int(t)) for k, t in sizes]
        self.n_lists, self.max_tokens, self.shuffle = batch_size, max_tokens, shuffle
        self.length_grouping, self.seed = length_grouping, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.sampler = self  # Lightning calls `batch_sampler.sampler.set_epoch(e)` each epoch

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self, rng: np.random.Generator | None) -> list[int]:
        n = len(self.sizes)
        base = rng.permutation(n).tolist() if rng is not None else list(range(n))
        if not self.length_grouping:
            return base
        # stable sort: equal (longest, K) keep the seeded random order of `base`
        return sorted(base, key=lambda i: (self.sizes[i][1], self.sizes[i][0]))

    def _chunk(self, order: list[int]) -> list[list[int]]:
        if self.max_tokens is None:
            return [order[s:s + self.n_lists] for s in range(0, len(order), self.n_lists)]
        batches: list[list[int]] = []
        cur: list[int] = []
        rows = width = 0
        for i in order:
            k, t = self.sizes[i]
            if cur and (rows + k) * max(width, t) > self.max_tokens:
                batches.append(cur)
                cur, rows, width = [], 0, 0
            cur.append(i)
            rows, width = rows + k, max(width, t)
        return batches + ([cur] if cur else [])

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch, before sharding across ranks."""
        e = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, e]) if self.shuffle else None
        batches = self._chunk(self._order(rng))
        if rng is not None and self.length_grouping:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def __len__(self) -> int:
        n = len(self.epoch_batches(0)) if self.max_tokens is not None else math.ceil(len(self.sizes) / self.n_lists)
        return math.ceil(n / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        batches = self.epoch_batches()
        if not batches:
            return
        per_rank = math.ceil(len(batches) / self.num_replicas)
        padded = [batches[i % len(batches)] for i in range(per_rank * self.num_replicas)]  # wrap-around top-up
        yield from padded[self.rank::self.num_replicas]
