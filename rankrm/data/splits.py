"""Train/val/test splits: group carving by seeded shares, per-split files, VADER's split by text ID.

Every split decision of the data layer lives here. Lists carry a *group* key (the prompt, an
OASST tree, ...): a group never straddles two splits, so no prompt leaks from train into test.
`assign_groups` needs only the group keys, not the lists, so a streaming reader (the on-disk
token cache) can record one key per list and carve afterwards. Memory: the set of group keys.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from rankrm.data.records import RankedList
from rankrm.errors import RankrmError

SPLITS = ("train", "val", "test")
Splits = dict[str, list[RankedList]]
Keyed = tuple[RankedList, str]  # a list and its split group, as parsers yield them
FRACTIONS = (0.8, 0.1, 0.1)  # the default train/val/test shares of every source


@dataclass
class Items:
    """Lists read from one input, a split group per list, and parser facts (e.g. `unranked_groups`)."""

    lists: list[RankedList] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, rl: RankedList, group: str) -> None:
        self.lists.append(rl)
        self.groups.append(group)


def prompt_group(rl: RankedList) -> str:
    """Lists that share a prompt share a split; a list without a prompt is a group of its own."""
    if rl.prompt is None:
        return rl.source
    return "prompt:" + json.dumps(rl.prompt, sort_keys=True, ensure_ascii=False)


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative train/val/test shares with a positive train share, normalised to sum 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0:
        raise RankrmError(f"data.source.fractions must be 3 shares [train, val, test] with train > 0, got {list(fr)}")
    total = sum(fr)
    return fr[0] / total, fr[1] / total, fr[2] / total


def assign_ranks(n_groups: int, shares: Mapping[str, float], seed: int) -> np.ndarray:
    """The split of each group (an index into `SPLITS`) by the group's rank in the sorted group keys.

    Only the number of groups matters: `random.shuffle` draws the same swaps for any list of that
    length, so shuffling the ranks 0..n-1 moves each group where shuffling its key would (see
    `assign_groups`). This is how the token cache carves: it stores one rank per list, not the keys.
    """
    order = list(range(n_groups))
    random.Random(f"{seed}:split").shuffle(order)
    out = np.zeros(n_groups, dtype=np.int8)  # SPLITS[0]: train
    start = 0
    for name, share in shares.items():
        n = round(share * n_groups)
        out[order[start : start + n]] = SPLITS.index(name)
        start += n
    return out


def assign_groups(groups: Iterable[str], shares: Mapping[str, float], seed: int) -> dict[str, str]:
    """Group key -> split: split s gets round(shares[s] * n_groups) groups, the rest go to train.

    Groups are sorted, then shuffled by a generator seeded with `seed` (string seeds hash
    stably), so the assignment is the same on every run and machine whatever the read order.
    """
    keys = sorted(set(groups))
    return {g: SPLITS[i] for g, i in zip(keys, assign_ranks(len(keys), shares, seed).tolist())}


def carve(items: Items, shares: Mapping[str, float], seed: int) -> Splits:
    """Split `items` by group (see `assign_groups`); lists keep their read order inside a split."""
    assign = assign_groups(items.groups, shares, seed)
    out: Splits = {"train": [], **{name: [] for name in shares}}
    for rl, g in zip(items.lists, items.groups):
        out[assign[g]].append(rl)
    return out


def carved_shares(given: Mapping[str, object | None], fractions: Sequence[float]) -> dict[str, float]:
    """The shares of the val/test splits with no input of their own (they are carved from train). Nothing
    to carve needs no `fractions` (a list builder without that option, e.g. `asap`, passes none)."""
    missing = [s for s in ("val", "test") if given.get(s) is None]
    if not missing:
        return {}
    fr = dict(zip(SPLITS, check_fractions(fractions)))
    return {s: fr[s] for s in missing}


def assemble(
    per_split: Mapping[str, Items | None],
    seed: int,
    fractions: Sequence[float] = FRACTIONS,  # train/val/test shares when carving (by prompt, tree, ...)
) -> tuple[Splits, dict]:
    """Given Items for train (the pool) and possibly val/test, carve the missing splits from the pool.

    Returns (split -> lists, info for `stats`: which splits were carved, the parsers' counts).
    Its `fractions` is an option of every row source.
    """
    pool = per_split["train"]
    assert pool is not None
    missing = carved_shares(per_split, fractions)
    splits = carve(pool, missing, seed) if missing else {"train": list(pool.lists)}
    counts: Counter[str] = Counter(pool.counts)
    for s in ("val", "test"):
        given = per_split.get(s)
        if given is not None:
            splits[s] = list(given.lists)
            counts.update(given.counts)
    return splits, {"carved": sorted(missing), **dict(counts)}


def split_by_id(ids: Sequence[str], fractions: Sequence[float], tag: str) -> dict[str, list[int]]:
    """Seeded split of items by ID (VADER: texts are split before lists are built).

    `tag` seeds the shuffle (e.g. "0:tweets": seed and domain). Val takes the first
    round(n * val share) of the shuffled IDs, test the next, train the rest; each split's
    indices come back in ascending order.
    """
    rng = random.Random(f"{tag}:split")  # str seeds are hashed stably (sha512)
    order = sorted(range(len(ids)), key=lambda i: ids[i])
    rng.shuffle(order)
    total = sum(fractions)
    n_val = round(len(order) * fractions[1] / total)
    n_test = round(len(order) * fractions[2] / total) if len(fractions) > 2 else 0
    parts = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
    return {k: sorted(v) for k, v in parts.items()}
