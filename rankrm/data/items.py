"""A split's items over the token cache: which lists it holds, as lists or pairs, as index arrays.

The cache (`tokencache.Store`) holds every list read; this module decides, from the arrays alone
(no text, no per-list Python object), what the in-memory path decided from `RankedList`s:
`split_rows` carves val/test from the train input by group rank (`splits.assign_ranks`),
`select` drops tied lists, applies `limit_*` and the overlong filter and counts each step,
`SplitItems.of_lists` / `of_pairs` make the dataset (item -> sequences of the cache).
Memory: int64 arrays of one entry per list and per sequence (~40 bytes a sequence); pairs:
~80 bytes a pair, plus a Python list of the pair indices while it is shuffled (~36 bytes a
pair: `random.shuffle`, which keeps the pair order of the in-memory path).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

from rankrm.data.collate import SeqBatch
from rankrm.data.splits import SPLITS, assign_ranks, carved_shares
from rankrm.data.tokencache import KEPT, OVERLONG, TIED, Store
from rankrm.data.tokenize import EncodedList


def split_rows(store: Store, fractions: Sequence[float], seed: int) -> tuple[dict[str, np.ndarray], list[str]]:
    """(split -> the cache rows of its lists in read order, the splits carved from the train input)."""
    given = store.manifest["given"]
    shares = carved_shares({s: (s if s in given else None) for s in SPLITS}, fractions)
    code = np.asarray(store.list_input).astype(np.int64)  # (L,) input each list came from
    if shares:
        pool = code == 0
        code[pool] = assign_ranks(store.manifest["groups"], shares, seed)[store.list_group[pool]]
    return {s: np.flatnonzero(code == i) for i, s in enumerate(SPLITS)}, sorted(shares)


def select(store: Store, rows: np.ndarray, cap: int | None, seed: int, split: str) -> tuple[np.ndarray, dict]:
    """The rows kept for training, and the counts of each step: tied lists out, a seeded subset of
    at most `cap` (`limit_<split>`, in read order), then lists too long for max_length out."""
    untied = rows[store.list_status[rows] != TIED]
    limited = untied
    if cap is not None and len(untied) > cap:
        keep = sorted(random.Random(f"{seed}:limit:{split}").sample(range(len(untied)), int(cap)))
        limited = untied[np.asarray(keep, dtype=np.int64)]
    status = store.list_status[limited]
    kept = limited[status == KEPT]
    cut = store.list_cut[kept].astype(np.int64)
    counts = {
        "lists_read": len(rows),
        "tied_dropped": len(rows) - len(untied),
        "over_limit": len(untied) - len(limited),
        "overlong_filtered": int((status == OVERLONG).sum()),
        "truncated_lists": int((cut > 0).sum()),
        "truncated_responses": int(cut.sum()),
    }
    return kept, counts


def _pairs_by_k(store: Store, rows: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per list size K: (positions in `rows`, first and second sequence of each (i < j) pair), (n, C(K,2)) each."""
    off = store.list_offsets
    k = (off[rows + 1] - off[rows]).astype(np.int64)  # (n,)
    for kk in np.unique(k):
        pos = np.flatnonzero(k == kk)
        i, j = np.triu_indices(int(kk), 1)  # row-major: (0,1), (0,2), ..., (1,2), ...
        base = off[rows[pos]][:, None]  # (n_k, 1)
        yield pos, base + i[None, :], base + j[None, :]


def count_pairs(store: Store, rows: np.ndarray) -> int:
    """Valid (better, worse) pairs in the lists: responses with different labels."""
    lab = store.labels
    return sum(int((lab[a] != lab[b]).sum()) for _, a, b in _pairs_by_k(store, rows))


class SplitItems:
    """The dataset of a split: item i is the cache sequences `seqs[ptr[i]:ptr[i+1]]` with `labels` alike.

    `dataset[i]` is an `EncodedList` (for inspection); a DataLoader fetches whole batches with
    `__getitems__`, which hands the collator slices of the mapped arrays (a `SeqBatch`).
    """

    def __init__(self, store: Store, ptr: np.ndarray, seqs: np.ndarray, labels: np.ndarray) -> None:
        self.store, self.ptr, self.seqs, self.labels = store, ptr, seqs, labels
        self.k = np.diff(ptr)  # (n,) sequences per item
        lens = store.seq_len[seqs]  # (M,)
        starts = ptr[:-1]
        self.max_len = np.maximum.reduceat(lens, starts) if len(starts) else np.zeros(0, np.int64)  # (n,)
        self.n_tokens = np.add.reduceat(lens, starts) if len(starts) else np.zeros(0, np.int64)  # (n,)

    @classmethod
    def of_lists(cls, store: Store, rows: np.ndarray) -> SplitItems:
        """One item per list, its responses in order."""
        first = store.list_offsets[rows]  # (n,)
        k = (store.list_offsets[rows + 1] - first).astype(np.int64)
        ptr = np.concatenate([[0], np.cumsum(k)]).astype(np.int64)  # (n+1,)
        seqs = np.repeat(first - ptr[:-1], k) + np.arange(ptr[-1])  # (M,) the lists' sequences, back to back
        return cls(store, ptr, seqs, np.asarray(store.labels[seqs]))

    @classmethod
    def of_pairs(cls, store: Store, rows: np.ndarray, seed: int) -> SplitItems:
        """One item per valid pair (better first, labels 1, 0), list by list, then shuffled with the seed
        exactly as `random.Random(f"{seed}:pairs").shuffle` shuffled the in-memory pairs."""
        lab = store.labels
        parts = []
        for pos, a, b in _pairs_by_k(store, rows):
            la, lb = lab[a], lab[b]
            keep = la != lb  # (n_k, C)
            better, worse = np.where(la > lb, a, b), np.where(la > lb, b, a)
            p, q = np.nonzero(keep)  # row-major: list by list, pair by pair
            parts.append((pos[p], q, better[p, q], worse[p, q]))
        if parts:
            pos, q, better, worse = (np.concatenate(x) for x in zip(*parts))
            order = np.lexsort((q, pos))  # back to list order (the K groups were apart)
            better, worse = better[order], worse[order]
        else:
            better = worse = np.zeros(0, np.int64)
        perm = list(range(len(better)))
        random.Random(f"{seed}:pairs").shuffle(perm)  # the same swaps as shuffling the pairs themselves
        perm_a = np.asarray(perm, dtype=np.int64)
        seqs = np.stack([better[perm_a], worse[perm_a]], axis=1).reshape(-1)  # (2P,) better, worse, ...
        labels = np.tile(np.array([1.0, 0.0]), len(perm_a))
        return cls(store, np.arange(0, 2 * len(perm_a) + 1, 2, dtype=np.int64), seqs, labels)

    def __len__(self) -> int:
        return len(self.k)

    def _slots(self, idx: np.ndarray) -> np.ndarray:
        """Positions in `seqs` of the items `idx`, item after item."""
        k = self.k[idx]
        return np.repeat(self.ptr[idx] - np.concatenate([[0], np.cumsum(k)[:-1]]), k) + np.arange(k.sum())

    def __getitems__(self, idx: Sequence[int]) -> SeqBatch:
        idx_a = np.asarray(idx, dtype=np.int64)
        slots = self._slots(idx_a)
        seqs, s = self.seqs[slots], self.store
        return SeqBatch(s.tokens, s.types, s.seq_offsets[seqs], s.seq_len[seqs], self.k[idx_a], self.labels[slots])

    def __getitem__(self, i: int) -> EncodedList:
        if not 0 <= i < len(self):
            raise IndexError(f"item {i} of {len(self)}")
        s, seqs = self.store, self.seqs[self.ptr[i] : self.ptr[i + 1]]
        cut = [(int(s.seq_offsets[q]), int(s.seq_offsets[q + 1])) for q in seqs]
        types = None if s.types is None else [s.types[a:b].tolist() for a, b in cut]
        labels = tuple(float(x) for x in self.labels[self.ptr[i] : self.ptr[i + 1]])
        return EncodedList([s.tokens[a:b].tolist() for a, b in cut], types, labels)

    def sizes(self) -> np.ndarray:
        """(n, 2): K and the longest sequence of each item, what the batch sampler sorts by."""
        return np.stack([self.k, self.max_len], axis=1)


def split_info(store: Store, carved: list[str]) -> dict[str, Any]:
    """`stats["source"]`: a builder's own facts, or which splits were carved and the parsers' counts."""
    m: Mapping[str, Any] = store.manifest
    return dict(m["info"]) if "info" in m else {"carved": carved, **m["counts"]}
