"""Batch sampler over lists: fixed lists-per-batch or a token budget, length-grouped or random,
deterministic under a seed, and sharded across DDP ranks by itself.

Length grouping sorts the lists by their longest response (ties in a seeded random order),
cuts the sorted order into batches and shuffles the order of the batches, so each batch holds
lists of similar length (little padding) while the batch sequence is random.

DDP with R ranks: the epoch's batches are computed identically on every rank. With `batch_size`
they are *global* batches of batch_size * R lists, each cut into R contiguous shards (rank r
takes shard r), so step s of R ranks sees exactly the lists of step s of one process run with
batch_size * R. With `max_tokens` the budget holds per rank: R consecutive batches make one
step. A short last step is topped up by wrapping around, so all ranks run the same number of
steps. Because it shards by itself the Trainer must not inject a DistributedSampler:
`Trainer(use_distributed_sampler=False)` (Lightning otherwise refuses this sampler with a TypeError).

Resuming mid-epoch: `resume_at(epoch, done)` makes the next pass over `epoch` skip the `done`
batches the interrupted run already trained on (see `ResumableLoader` in datamodule.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import Sampler


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
    The config's values (data.batch_size, data.max_tokens and its need of length_grouping) are checked
    by the schema, rankrm.config.schema.Data.
    """

    def __init__(
        self,
        sizes: Sequence[tuple[int, int]],
        batch_size: int = 8,
        max_tokens: int | None = None,
        shuffle: bool = True,
        length_grouping: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside world size {num_replicas}")
        self.sizes = [(int(k), int(t)) for k, t in sizes]
        self.n_lists, self.max_tokens, self.shuffle = batch_size, max_tokens, shuffle
        self.length_grouping, self.seed = length_grouping, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.sampler = self  # Lightning calls `batch_sampler.sampler.set_epoch(e)` each epoch
        self._skip: tuple[int, int] | None = None  # (epoch, batches to skip) after a mid-epoch resume

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, done: int) -> None:
        """The next pass over `epoch` starts after its first `done` batches (of this rank)."""
        self._skip = (int(epoch), int(done))

    def pending_skip(self) -> int:
        """How many batches the next pass over the current epoch skips (0 unless resumed)."""
        return self._skip[1] if self._skip is not None and self._skip[0] == self.epoch else 0

    def _order(self, rng: np.random.Generator | None) -> list[int]:
        n = len(self.sizes)
        base = rng.permutation(n).tolist() if rng is not None else list(range(n))
        if not self.length_grouping:
            return base
        # stable sort: equal (longest, K) keep the seeded random order of `base`
        return sorted(base, key=lambda i: (self.sizes[i][1], self.sizes[i][0]))

    def _chunk(self, order: list[int]) -> list[list[int]]:
        if self.max_tokens is None:
            size = self.n_lists * self.num_replicas  # global batches, sharded in `rank_batches`
            return [order[s : s + size] for s in range(0, len(order), size)]
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
        """All batches of an epoch before sharding (global batches of batch_size * num_replicas lists)."""
        e = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, e]) if self.shuffle else None
        batches = self._chunk(self._order(rng))
        if rng is not None and self.length_grouping:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def rank_batches(self, epoch: int | None = None) -> list[list[int]]:
        """This rank's batches of an epoch: its part of each of the epoch's steps (see module docstring)."""
        batches, r = self.epoch_batches(epoch), self.num_replicas
        if r == 1 or not batches:
            return batches
        if self.max_tokens is None:  # one global batch per step, cut into r contiguous shards
            steps = [[b[j * len(b) // r : (j + 1) * len(b) // r] for j in range(r)] for b in batches]
        else:  # per-rank token budgets: r consecutive batches per step
            steps = [batches[s : s + r] for s in range(0, len(batches), r)]
        pool = [part for step in steps for part in step if part]
        out = []
        for step in steps:
            parts = [p for p in step if p]
            parts += [pool[j % len(pool)] for j in range(r - len(parts))]  # top up a short step: wrap around
            out.append(parts[self.rank])
        return out

    def __len__(self) -> int:
        if self.max_tokens is None:  # one step per global batch
            return math.ceil(len(self.sizes) / (self.n_lists * self.num_replicas))
        return math.ceil(len(self.epoch_batches(0)) / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: this runs at the first `next()`, after Lightning's `set_epoch`.
        batches = self.rank_batches()
        skip, self._skip = self.pending_skip(), None
        yield from batches[skip:]
