"""From a `data.source` config to train/val/test lists: reader dispatch and seeded group splits.

`source.reader` picks the reader (`seed_tsv`, `jsonl`, `trl_pairs`, `oasst`, `hf`, `vader`, `asap`); the
other `source` keys are that reader's options. File readers take either one `path` (all three
splits carved from it) or `train` (+ optional `val`/`test`; a missing one is carved from the
train file). Carving is by group (prompt or tree), seeded, with the `fractions` shares.
"""

from __future__ import annotations

import inspect
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rankrm.data.readers import FILE_READERS, Items
from rankrm.data.records import RankedList
from rankrm.data.validate import DropLog
from rankrm.errors import RankrmError

SPLITS = ("train", "val", "test")
Splits = dict[str, list[RankedList]]


def check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    """Three non-negative train/val/test shares with a positive train share, normalised to sum 1."""
    fr = tuple(float(f) for f in fractions)
    if len(fr) != 3 or min(fr) < 0 or fr[0] <= 0:
        raise RankrmError(f"data.source.fractions must be 3 shares [train, val, test] with train > 0, got {list(fr)}")
    total = sum(fr)
    return fr[0] / total, fr[1] / total, fr[2] / total


def carve(items: Items, shares: Mapping[str, float], seed: int) -> Splits:
    """Split `items` by group: split s gets round(shares[s] * n_groups) groups, the rest go to train.

    Groups are shuffled with a generator seeded by `seed` (string seeds hash stably), so the
    split is the same on every run and machine; lists keep their file order inside a split.
    """
    groups = sorted(set(items.groups))
    random.Random(f"{seed}:split").shuffle(groups)
    assign: dict[str, str] = {}
    start = 0
    for name, share in shares.items():
        n = round(share * len(groups))
        assign.update((g, name) for g in groups[start : start + n])
        start += n
    out: Splits = {"train": [], **{name: [] for name in shares}}
    for rl, g in zip(items.lists, items.groups):
        out[assign.get(g, "train")].append(rl)
    return out


def assemble(per_split: Mapping[str, Items | None], fractions: Sequence[float], seed: int) -> tuple[Splits, dict]:
    """Given Items for train (the pool) and possibly val/test, carve the missing splits from the pool."""
    fr = dict(zip(SPLITS, check_fractions(fractions)))
    pool = per_split["train"]
    assert pool is not None
    missing = {s: fr[s] for s in ("val", "test") if per_split.get(s) is None}
    splits = carve(pool, missing, seed) if missing else {"train": list(pool.lists)}
    counts: Counter[str] = Counter(pool.counts)
    for s in ("val", "test"):
        given = per_split.get(s)
        if given is not None:
            splits[s] = list(given.lists)
            counts.update(given.counts)
    return splits, {"carved": sorted(missing), **dict(counts)}


def load_files(
    read: Callable[[str | Path, DropLog], Items],
    log: DropLog,
    seed: int,
    path: str | None = None,
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[Splits, dict]:
    """Read the configured files with `read` and build the three splits."""
    if bool(path) == bool(train):
        raise RankrmError(
            "data.source: give either `path` (one file, split by `fractions`) or `train` (+ `val`/`test`)"
        )
    per_split = {"train": read(path or train, log)}  # type: ignore[arg-type]
    for name, p in (("val", val), ("test", test)):
        per_split[name] = read(p, log) if p else None
    return assemble(per_split, fractions, seed)


def _check_options(fn: Callable[..., Any], opts: Mapping[str, Any], reader: str) -> None:
    params = inspect.signature(fn).parameters
    unknown = sorted(set(opts) - set(params) - {"log", "seed"})
    if unknown:
        valid = sorted(p for p in params if p not in ("log", "seed", "read"))
        raise RankrmError(f"data.source: unknown option(s) {unknown} for reader '{reader}' (valid: {valid})")


class SourceData:
    """The lists of a `data.source`, read and validated (no tokenizer needed): what `read_source` returns.

    A plain class, not a dataclass: it passes through `hydra.utils.instantiate` as an opaque object.
    """

    def __init__(self, splits: Splits, info: dict, drops: DropLog) -> None:
        self.splits, self.info, self.drops = splits, info, drops


def read_source(source: Mapping[str, Any], seed: int, skip_invalid: bool = False) -> SourceData:
    """Read and validate every file of `source` (the runner calls it before building any model)."""
    drops = DropLog(bool(skip_invalid))
    splits, info = load_source(source, seed, drops)
    return SourceData(splits, info, drops)


def describe(source: Mapping[str, Any]) -> str:
    """Where the lists came from, for error messages: the files, or the reader and its folder/id."""
    files = [str(source[k]) for k in ("path", "train", "val", "test") if source.get(k)]
    return ", ".join(files) or f"reader {source.get('reader')} ({source.get('data_dir') or 'default location'})"


def load_source(source: Mapping[str, Any], seed: int, log: DropLog) -> tuple[Splits, dict]:
    """Dispatch on `source["reader"]`; return (split -> lists, reader info for `stats`)."""
    opts = dict(source)
    reader = opts.pop("reader", None)
    if reader == "vader":
        from rankrm.data.vader import load_vader as fn
    elif reader == "hf":
        from rankrm.data.hf import load_hf as fn
    elif reader == "asap":
        from rankrm.data.asap import load_asap as fn
    elif reader in FILE_READERS:
        _check_options(load_files, opts, reader)
        return load_files(FILE_READERS[reader], log, seed, **opts)
    else:
        raise RankrmError(
            f"data.source.reader must be one of {sorted([*FILE_READERS, 'asap', 'hf', 'vader'])}, got {reader!r}"
        )
    _check_options(fn, opts, reader)
    return fn(log, seed, **opts)
