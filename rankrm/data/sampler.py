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
        sizes: per item (K responses, longest response in tokens), or an (n, 2) array of them.
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
        sizes: Sequence[tuple[int, int]] | np.ndarray,
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
        arr = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)  # (n, 2): K, longest sequence
        self.k, self.t = arr[:, 0], arr[:, 1]
        self.n_lists, self.max_tokens, self.shuffle = batch_size, max_tokens, shuffle
        self.length_grouping, self.seed = length_grouping, seed
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.sampler = self  # Lightning calls `batch_sampler.sampler.set_epoch(e)` each epoch
        self._skip: tuple[int, int] | None = None  # (epoch, batches to skip) after a mid-epoch resume
        self._n_budget: int | None = None  # batches per epoch with max_tokens (the same every epoch)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume_at(self, epoch: int, done: int) -> None:
        """The next pass over `epoch` starts after its first `done` batches (of this rank)."""
        self._skip = (int(epoch), int(done))

    def pending_skip(self) -> int:
        """How many batches the next pass over the current epoch skips (0 unless resumed)."""
        return self._skip[1] if self._skip is not None and self._skip[0] == self.epoch else 0

    def _order(self, rng: np.random.Generator | None) -> np.ndarray:
        n = len(self.k)
        base = rng.permutation(n) if rng is not None else np.arange(n)
        if not self.length_grouping:
            return base
        # stable sort by (longest, K): equal sizes keep the seeded random order of `base`
        return base[np.lexsort((self.k[base], self.t[base]))]

    def _chunk(self, order: np.ndarray) -> list[np.ndarray]:
        if self.max_tokens is None:
            size = self.n_lists * self.num_replicas  # global batches, sharded in `rank_batches`
            return [order[s : s + size] for s in range(0, len(order), size)]
        cuts: list[int] = []
        rows = width = 0
        for n, (k, t) in enumerate(zip(self.k[order].tolist(), self.t[order].tolist())):
            if n and (rows + k) * max(width, t) > self.max_tokens:  # this item would burst the budget
                cuts.append(n)
                rows, width = 0, 0
            rows, width = rows + k, max(width, t)
        return np.split(order, cuts) if len(order) else []

    def epoch_arrays(self, epoch: int | None = None) -> list[np.ndarray]:
        """`epoch_batches` as index arrays (no Python list per batch)."""
        e = self.epoch if epoch is None else epoch
        rng = np.random.default_rng([self.seed, e]) if self.shuffle else None
        batches = self._chunk(self._order(rng))
        if rng is not None and self.length_grouping:
            batches = [batches[j] for j in rng.permutation(len(batches))]
        return batches

    def epoch_batches(self, epoch: int | None = None) -> list[list[int]]:
        """All batches of an epoch before sharding (global batches of batch_size * num_replicas lists)."""
        return [b.tolist() for b in self.epoch_arrays(epoch)]

    def rank_batches(self, epoch: int | None = None) -> list[np.ndarray]:
        """This rank's batches of an epoch: its part of each of the epoch's steps (see module docstring)."""
        batches, r = self.epoch_arrays(epoch), self.num_replicas
        if r == 1 or not batches:
            return batches
        if self.max_tokens is None:  # one global batch per step, cut into r contiguous shards
            steps = [[b[j * len(b) // r : (j + 1) * len(b) // r] for j in range(r)] for b in batches]
        else:  # per-rank token budgets: r consecutive batches per step
            steps = [batches[s : s + r] for s in range(0, len(batches), r)]
        pool = [part for step in steps for part in step if len(part)]
        out = []
        for step in steps:
            parts = [p for p in step if len(p)]
            parts += [pool[j % len(pool)] for j in range(r - len(parts))]  # top up a short step: wrap around
            out.append(parts[self.rank])
        return out

    def __len__(self) -> int:
        if self.max_tokens is None:  # one step per global batch
            return math.ceil(len(self.k) / (self.n_lists * self.num_replicas))
        if self._n_budget is None:  # equal sizes pack alike whatever their order: one count for every epoch
            self._n_budget = len(self.epoch_arrays(0))
        return math.ceil(self._n_budget / self.num_replicas)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: this runs at the first `next()`, after Lightning's `set_epoch`.
        batches = self.rank_batches()
        skip, self._skip = self.pending_skip(), None
        yield from (b.tolist() for b in batches[skip:])
