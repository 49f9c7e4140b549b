"""The token cache: a source is read, validated and tokenised once; later runs map its files.

`open_tokens` is what the data module calls: it keys the source (`cachekey`), maps the entry
if a complete one exists, and otherwise builds it (`tokencache`). Every run, sweep trial and
DDP rank that asks for the same key maps the same files. Safety:
- an entry is written as `.<name>.tmp-*` and renamed into place once complete (files synced);
- opening checks the manifest (key, byte size of every file, array lengths, offsets): an entry
  that fails (a crash mid-copy, a truncated disk) is logged once and rebuilt;
- building holds an exclusive `fcntl` lock on `<name>.lock`: a second process (another trial, a
  DDP rank started by torchrun/SLURM) waits, then maps what the first built. Lightning's own DDP
  launcher starts the other ranks after rank 0 has set up its data, so they find it built.
`check_source` is preflight's data check: it validates every record without a tokenizer and
without holding them, and remembers (`validated/<key>.json`) that this content passed, so a
later run skips the pass. Delete the cache folder at any time to reclaim its space; runs that
have an entry mapped keep reading it (Linux keeps unlinked files until they are unmapped).
`data.cache=false` (`keep=False`): the same files, built into a private folder of this process
(`build_private`) and deleted when it exits; no file is hashed and no marker written.
"""

from __future__ import annotations

import atexit
import fcntl
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rankrm.data.cachekey import source_key, token_key
from rankrm.data.sources import Resolved, resolve
from rankrm.data.splits import SPLITS
from rankrm.data.tokencache import Corrupt, Store, write_lists
from rankrm.data.validate import DropLog
from rankrm.errors import RankrmError
from rankrm.inputs import DEFAULT_FORMAT, InputFormat
from rankrm.io import atomic_write_json
from rankrm.paths import data_cache_root

log = logging.getLogger(__name__)
Lists = Iterator[tuple[Any, int, "str | None"]]  # (RankedList, input code, split group key or None)


def cache_root(configured: str | None = None) -> Path:
    """Where token caches live (`rankrm.paths.data_cache_root`), created if missing."""
    root = data_cache_root(configured)
    try:
        (root / "digests").mkdir(parents=True, exist_ok=True)
        (root / "validated").mkdir(exist_ok=True)
    except OSError as e:
        raise RankrmError(
            f"data.cache_dir={root} cannot be created ({e.strerror}): set data.cache_dir or $RANKRM_CACHE_DIR "
            "to a writable folder"
        ) from None
    return root


def source_lists(r: Resolved, seed: int, log: DropLog, facts: dict[str, Any]) -> Lists:
    """Every list of a source, one at a time, with its input (0 train, 1 val, 2 test) and, for the
    train input of a row source, its split group. Fills `facts` with what `items` needs later."""
    if r.kind.build is not None:  # a builder (VADER) makes its splits itself, from texts it holds
        splits, info = r.read(log, seed)
        facts.update(given=list(SPLITS), info=info)
        for code, split in enumerate(SPLITS):
            yield from ((rl, code, None) for rl in splits.get(split, []))
        return
    assert r.parsing is not None
    inputs = r.rows(log)  # opens every input: a missing file fails before any is read
    counts: Counter[str] = Counter()
    facts.update(given=[s for s in SPLITS if inputs.get(s) is not None], counts=counts)
    for code, split in enumerate(SPLITS):
        rows = inputs.get(split)
        if rows is not None:
            yield from ((rl, code, group if code == 0 else None) for rl, group in r.parsing.stream(rows, log, counts))


def dropped_error(facts: Mapping[str, Any], skip_invalid: bool) -> None:
    """A source with dropped records, used without `skip_invalid`: its first error, as reading would raise it."""
    if facts["dropped"] and not skip_invalid:
        raise RankrmError(facts["examples"][0])


class SourceCheck:
    """What preflight learnt about a source (its key; drops), handed to the data module as `preread`."""

    def __init__(self, key: str, parts: dict[str, Any], facts: dict[str, Any]) -> None:
        self.key, self.parts, self.facts = key, parts, facts


def check_source(
    source: Mapping[str, Any], seed: int, skip_invalid: bool, cache_dir: str | None, keep: bool = True
) -> SourceCheck:
    """Preflight's data check: every record of `source` valid (or dropped and counted), streamed, no tokenizer.

    With `keep` (data.cache=true), a source whose content and options passed before is not read again
    (`validated/<key>.json`); without it nothing is hashed, read back or written.
    """
    r = resolve(source)
    root = cache_root(cache_dir)
    key, parts = source_key(r, seed, root / "digests") if keep else (None, {})
    marker = root / "validated" / f"{key}.json"
    try:
        facts = json.loads(marker.read_text()) if keep else None
    except (OSError, ValueError):
        facts = None
    if facts is None:
        drops = DropLog(skip_invalid)
        for _ in source_lists(r, seed, drops, {}):
            pass
        facts = {"dropped": drops.as_dict(), "examples": drops.examples}
        if keep:
            atomic_write_json(marker, facts)
    dropped_error(facts, skip_invalid)
    return SourceCheck(key, parts, facts)


def _slug(r: Resolved) -> str:
    first = Path(str(r.content()[0])).name if r.kind.build is None else r.reader
    return re.sub(r"[^a-z0-9]+", "-", first.lower()).strip("-")[:40] or "data"


def open_tokens(
    source: Mapping[str, Any],
    tokenizer: Any,
    seed: int,
    max_length: int | None,
    overlong: str,
    truncation_side: str,
    skip_invalid: bool,
    fmt: InputFormat = DEFAULT_FORMAT,
    cache_dir: str | None = None,
    keep: bool = True,
    checked: SourceCheck | None = None,
) -> tuple[Store, dict[str, Any]]:
    """The mapped tokens of `source` and facts for `stats`. `keep` (data.cache=true): the shared entry of
    its key, built now if missing or unusable; else a private entry built now and deleted at exit."""
    r = resolve(source)
    root = cache_root(cache_dir)

    def build(tmp: Path, marker: Path | None) -> dict[str, Any]:
        drops, facts, groups = DropLog(skip_invalid), {}, {}
        lists = source_lists(r, seed, drops, facts)
        keyed = ((rl, code, -1 if g is None else groups.setdefault(g, len(groups))) for rl, code, g in lists)
        writer = write_lists(tmp, keyed, tokenizer, max_length, overlong, truncation_side, fmt)
        rank_of = np.zeros(len(groups), dtype=np.int32)
        for rank, g in enumerate(sorted(groups)):  # `splits.assign_groups` sorts the keys the same way
            rank_of[groups[g]] = rank
        writer.set_groups(rank_of)
        checkfacts = {"dropped": drops.as_dict(), "examples": drops.examples}
        if marker is not None:
            atomic_write_json(marker, checkfacts)
        counts = dict(facts.pop("counts", {}))
        return {**writer.finish(), **facts, **checkfacts, "counts": counts, "groups": len(groups)}

    start = time.perf_counter()
    if keep:
        known = checked is not None and checked.key is not None
        skey, sparts = (checked.key, checked.parts) if known else source_key(r, seed, root / "digests")  # type: ignore[union-attr]
        key, parts = token_key(skey, tokenizer, max_length, overlong, truncation_side, fmt)
        parts["source"] = sparts
        marker = root / "validated" / f"{skey}.json"
        store, built = open_or_build(root, f"{_slug(r)}-{key[:16]}", key, parts, lambda tmp: build(tmp, marker))
    else:
        store, built = build_private(root, lambda tmp: build(tmp, None)), True
    dropped_error(store.manifest, skip_invalid)
    m = store.manifest
    info = {
        "on": keep,
        "dir": str(store.path) if keep else None,
        "hit": not built,
        "seconds": round(time.perf_counter() - start, 3),
        "tokens": m["tokens"],
        "bytes": sum(m["files"].values()),
    }
    return store, info


PRIVATE = "private"  # the key of an entry built for one process (data.cache=false)


def build_private(root: Path, build: Callable[[Path], dict[str, Any]]) -> Store:
    """An entry for this process only (`.private-<host>-<pid>-*` in `root`), removed when it exits; the
    entries of this host's processes that died before removing theirs are removed first."""
    host = re.sub(r"[^A-Za-z0-9]+", "-", socket.gethostname())
    for old in root.glob(f".{PRIVATE}-{host}-*"):
        pid = old.name.split("-")[-2]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{PRIVATE}-{host}-{os.getpid()}-", dir=root))
    atexit.register(shutil.rmtree, tmp, True)  # the mapped pages stay readable until unmapped
    manifest = {**build(tmp), "key": PRIVATE}
    atomic_write_json(tmp / "manifest.json", manifest)
    return Store(tmp, PRIVATE)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


@contextmanager
def _locked(path: Path, what: str) -> Iterator[None]:
    """An exclusive `fcntl` lock on `path` for the block (released if the process dies)."""
    with open(path, "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("rankrm data cache: waiting for another process to finish building %s", what)
            fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _open(entry: Path, key: str, warn: bool) -> Store | None:
    """The entry mapped, or None if it is missing or unusable (logged once, when `warn`)."""
    if not entry.exists():
        return None
    try:
        return Store(entry, key)
    except Corrupt as e:
        if warn:
            log.warning("rankrm data cache: %s is unusable (%s): rebuilding it", entry, e)
        return None


def open_or_build(
    root: Path, name: str, key: str, parts: dict[str, Any], build: Callable[[Path], dict[str, Any]]
) -> tuple[Store, bool]:
    """(the entry `root/name` mapped, whether this call built it). `build(tmp)` writes the files."""
    entry = root / name
    store = _open(entry, key, warn=True)
    if store is not None:
        log.info("rankrm data cache: mapped %s", entry)
        return store, False
    with _locked(root / f"{name}.lock", name):
        store = _open(entry, key, warn=False)  # built by the process we waited for
        if store is not None:
            log.info("rankrm data cache: mapped %s (built by another process)", entry)
            return store, False
        for stale in root.glob(f".{name}.*"):  # a killed build's leftovers, or the unusable entry moved aside
            shutil.rmtree(stale, ignore_errors=True)
        if entry.exists():  # unusable: moved aside first, so no reader ever sees it half-deleted
            old = root / f".{name}.old-{os.getpid()}"
            entry.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        log.info("rankrm data cache: building %s (tokenising once)", entry)
        start = time.perf_counter()
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=root))
        try:
            manifest = {**build(tmp), "key": key, "parts": parts, "build_s": round(time.perf_counter() - start, 2)}
            atomic_write_json(tmp / "manifest.json", manifest)
            os.rename(tmp, entry)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        _fsync_dir(root)
        log.info("rankrm data cache: built %s in %.1f s", entry, manifest["build_s"])
    return Store(entry, key), True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
