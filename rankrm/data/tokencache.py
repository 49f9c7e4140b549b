"""The token cache's files: one source's lists, tokenised once, as flat arrays that runs map.

One entry is a folder (`cache.py` names it and decides when to build):
  tokens.bin        the token ids of every kept sequence, back to back (uint16; uint32 past 65,536 ids)
  types.bin         their token type ids (uint8), if the tokenizer makes them (BERT-style text pairs)
  seq_offsets.npy   int64 (S+1,): sequence s is tokens[seq_offsets[s]:seq_offsets[s+1]]
  labels.npy        float64 (S,): the label of sequence s's response
  list_offsets.npy  int64 (L+1,): list l owns sequences list_offsets[l]:list_offsets[l+1] (none unless kept)
  list_input.npy    uint8 (L,): the input it was read from (0 train, 1 val, 2 test)
  list_group.npy    int32 (L,): rank of its split group among the train input's sorted group keys (-1: others)
  list_status.npy   uint8 (L,): KEPT, TIED (every label equal) or OVERLONG (longer than max_length: filtered)
  list_cut.npy      uint16 (L,): responses truncated to max_length
  manifest.json     the key and its parts, the byte size of every file above, counts, drops, parser facts
Every list read has a row, in read order per input, so the reader (`items.py`) carves splits,
applies limits and counts drops exactly as the in-memory path did, without the texts.

Size on disk: 2 bytes a token (+1 with type ids; 4 past 65,536 ids), 16 bytes a sequence and
16 a list: ~0.9 GB for 400k lists x 4 x ~190 tokens with type ids. Building streams: rows are
parsed one at a time and tokenised in chunks of ~4k sequences, each chunk's tokens appended to
`tokens.bin` while the next chunk is parsed; memory holds three chunks, the 16 + 16 bytes a
sequence and a list of the small arrays, and the set of group keys (prompts) of the train
input. Time: one pass over the rows plus the tokenizer (its threads on:
`TOKENIZERS_PARALLELISM=true` while building only; the training process turns them off to
leave the cores to torch). A fast tokenizer's Rust core is called directly, without offsets,
and its tokens go straight into numpy arrays (`tokenize.encode_fast`, `flatten`): 0.90-0.93x the
tokenizer's own fastest call at 100k-400k lists on 2 idle cores (scripts/bench_data.py).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

from rankrm.data.records import RankedList
from rankrm.data.tokenize import Flat, assemble, encode_fast, encode_lists, flatten, tokenize_jobs
from rankrm.data.validate import all_tied
from rankrm.inputs import InputFormat, Job, make_job

KEPT, TIED, OVERLONG = 0, 1, 2
SMALL = {  # name -> dtype of the per-sequence and per-list arrays (.npy)
    "seq_offsets": np.int64,
    "labels": np.float64,
    "list_offsets": np.int64,
    "list_input": np.uint8,
    "list_group": np.int32,
    "list_status": np.uint8,
    "list_cut": np.uint16,
}
_TYPECODES = {np.int64: "q", np.float64: "d", np.uint8: "B", np.int32: "i", np.uint16: "H"}
CHUNK_SEQS = 4096  # sequences per tokenizer call: big enough for its threads, small enough to stream
Listed = tuple[RankedList, int, int]  # (list, input code, group id or -1)
Done = tuple[Flat, np.ndarray, np.ndarray]  # a chunk tokenised: kept lists' sequences, kept (L,) bool, cut (L,)
Pending = tuple[list[Listed], list[bool], list[RankedList], Future]  # chunk, tied flags, untied lists, their tokens


class Corrupt(Exception):
    """An entry that cannot be used (missing or truncated file, manifest that does not match)."""


class Store:
    """An opened entry: memory-mapped arrays (read-only) and its manifest. Pickles as its path."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = Path(path), key
        try:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise Corrupt(f"manifest.json unreadable ({type(e).__name__})") from None
        m = self.manifest
        if m.get("key") != key:
            raise Corrupt("manifest.json belongs to another key")
        for name, size in m["files"].items():
            f = self.path / name
            if not f.is_file() or f.stat().st_size != size:
                raise Corrupt(f"{name}: {f.stat().st_size if f.is_file() else 'no'} bytes, manifest says {size}")
        self.tokens = _map(self.path / "tokens.bin", m["dtype"], m["tokens"])
        self.types = _map(self.path / "types.bin", "uint8", m["tokens"]) if m["types"] else None
        a = {name: np.asarray(np.load(self.path / f"{name}.npy", mmap_mode="r")) for name in SMALL}  # plain views
        self._check(a)
        self.seq_offsets, self.labels, self.list_offsets = a["seq_offsets"], a["labels"], a["list_offsets"]
        self.list_input, self.list_group = a["list_input"], a["list_group"]
        self.list_status, self.list_cut = a["list_status"], a["list_cut"]
        self.seq_len = np.diff(self.seq_offsets)  # (S,) tokens per sequence

    def _check(self, a: dict[str, np.ndarray]) -> None:
        m, n_lists, n_seqs = self.manifest, self.manifest["lists"], self.manifest["sequences"]
        shapes = {name: len(v) for name, v in a.items()}
        want = {"seq_offsets": n_seqs + 1, "labels": n_seqs, "list_offsets": n_lists + 1}
        want.update({name: n_lists for name in SMALL if name.startswith("list_") and name != "list_offsets"})
        if shapes != want:
            raise Corrupt(f"array lengths {shapes}, manifest says {want}")
        for name, end in (("seq_offsets", m["tokens"]), ("list_offsets", n_seqs)):
            off = a[name]
            if off[0] != 0 or off[-1] != end or (np.diff(off) < 0).any():
                raise Corrupt(f"{name} do not run from 0 to {end}")

    def __reduce__(self) -> tuple[Any, ...]:  # DataLoader workers (spawn) reopen the files, not copy them
        return (Store, (self.path, self.key))


def _map(path: Path, dtype: str, n: int) -> np.ndarray:
    if n == 0:  # numpy cannot map an empty file
        return np.zeros(0, dtype=dtype)
    return np.asarray(np.memmap(path, dtype=dtype, mode="r", shape=(n,)))  # an ndarray view: no memmap wrapping


def token_dtype(tokenizer: Any) -> np.dtype:
    """The narrowest unsigned type that holds every id of the tokenizer."""
    top = max(tokenizer.get_vocab().values(), default=0)  # added tokens included
    return np.dtype(np.uint16 if top < 1 << 16 else np.uint32)


class Writer:
    """Appends tokenised lists to an entry being built: tokens straight to disk, offsets in memory."""

    def __init__(self, root: Path, dtype: np.dtype) -> None:
        self.root, self.dtype = root, dtype
        self.cols = {name: array(_TYPECODES[dt]) for name, dt in SMALL.items()}
        self.cols["seq_offsets"].append(0)
        self.cols["list_offsets"].append(0)
        self.tokens = open(root / "tokens.bin", "wb")  # closed in finish()
        self.types: Any = None
        self.n_tokens = 0

    def add(self, listed: list[Listed], tied: list[bool], done: Done) -> None:
        """One chunk: its lists in read order, which are tied, and `done` for the untied ones (see `_add`)."""
        c, (flat, ok, cut) = self.cols, done
        u = 0  # index among the untied lists
        for (rl, code, group), t in zip(listed, tied):
            c["list_input"].append(code)
            c["list_group"].append(group)
            c["list_status"].append(TIED if t else KEPT if ok[u] else OVERLONG)
            c["list_cut"].append(0 if t else int(cut[u]))
            if not t:
                if ok[u]:
                    c["labels"].extend(rl.labels)
                u += 1
            c["list_offsets"].append(len(c["labels"]))
        c["seq_offsets"].extend((np.cumsum(flat.lens) + self.n_tokens).tolist())
        self.n_tokens += len(flat.ids)
        flat.ids.tofile(self.tokens)
        if flat.types is not None:
            if self.types is None:
                assert self.n_tokens == len(flat.ids), "type ids for some sequences only"
                self.types = open(self.root / "types.bin", "wb")  # closed in finish()
            flat.types.tofile(self.types)

    def finish(self) -> dict[str, Any]:
        """Flush and sync every file; the manifest's counts and file sizes."""
        for fh in (self.tokens, self.types):
            if fh is not None:
                fh.flush()
                os.fsync(fh.fileno())
                fh.close()
        for name, col in self.cols.items():
            with open(self.root / f"{name}.npy", "wb") as fh:
                np.save(fh, np.frombuffer(col, dtype=SMALL[name]) if len(col) else np.zeros(0, SMALL[name]))
                fh.flush()
                os.fsync(fh.fileno())
        files = {f.name: f.stat().st_size for f in sorted(self.root.iterdir())}
        n_lists = len(self.cols["list_input"])
        return {
            "dtype": self.dtype.name,
            "types": self.types is not None,
            "tokens": self.n_tokens,
            "sequences": len(self.cols["labels"]),
            "lists": n_lists,
            "files": files,
        }

    def set_groups(self, rank_of: np.ndarray) -> None:
        """Replace first-seen group ids by their rank among the sorted keys (see `items.split_rows`)."""
        if not len(rank_of):  # no train input groups (a builder's lists)
            return
        g = np.frombuffer(self.cols["list_group"], dtype=np.int32)
        ranked = np.where(g >= 0, rank_of[np.maximum(g, 0)], -1).astype(np.int32)
        self.cols["list_group"] = array("i", ranked.tobytes())


def chunks(lists: Iterable[Listed], n_seqs: int) -> Iterator[list[Listed]]:
    """Consecutive lists, about `n_seqs` responses a chunk."""
    chunk: list[Listed] = []
    size = 0
    for item in lists:
        chunk.append(item)
        size += item[0].k
        if size >= n_seqs:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


@contextmanager
def tokenizer_threads() -> Iterator[None]:
    """The fast tokenizer's own threads on while building (train.py turns them off for torch's sake)."""
    old = os.environ.get("TOKENIZERS_PARALLELISM")
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("TOKENIZERS_PARALLELISM", None)
        else:
            os.environ["TOKENIZERS_PARALLELISM"] = old


def write_lists(
    root: Path,
    lists: Iterable[Listed],
    tokenizer: Any,
    max_length: int | None,
    overlong: str,
    truncation_side: str,
    fmt: InputFormat,
) -> Writer:
    """Tokenise `lists` into a new entry folder `root`, chunk by chunk, each (prompt, response) as `fmt`
    and `rankrm.inputs.make_job` say (as `rankrm.score` and `rankrm.reward_function` do); returns the
    (unfinished) writer.

    The tokenizer runs in a second thread (its Rust core does not hold the GIL) while this one
    parses the next chunk and writes the previous one, so parsing costs little time on top.
    """
    encode_lists(tokenizer, [], max_length, overlong, truncation_side)  # its checks of the options
    limit = max_length if overlong == "truncate" else None
    writer = Writer(root, token_dtype(tokenizer))
    pending: Pending | None = None
    with tokenizer_threads(), ThreadPoolExecutor(1, thread_name_prefix="rankrm-tokenize") as pool:
        for chunk in chunks(lists, CHUNK_SEQS):
            tied = [all_tied(rl) for rl, _, _ in chunk]
            untied = [rl for (rl, _, _), t in zip(chunk, tied) if not t]
            jobs = [make_job(tokenizer, rl, r, fmt) for rl in untied for r in rl.responses]
            future = pool.submit(_tokenize, tokenizer, jobs, limit, truncation_side)
            if pending is not None:
                _add(writer, pending, tokenizer, max_length)
            pending = (chunk, tied, untied, future)
        if pending is not None:
            _add(writer, pending, tokenizer, max_length)
    return writer


def _tokenize(tokenizer: Any, jobs: list[Job], limit: int | None, side: str) -> tuple[bool, list[Any]]:
    """(fast, result): untruncated jobs of one kind (the common case) only through the Rust tokenizer, in the
    pool's thread, without the GIL (`encode_fast`); truncation and mixed kinds as in memory (`tokenize_jobs`)."""
    encs = encode_fast(tokenizer, jobs) if limit is None else None
    return (True, encs) if encs is not None else (False, tokenize_jobs(tokenizer, jobs, limit, side))


def _add(writer: Writer, pending: Pending, tokenizer: Any, max_length: int | None) -> None:
    """Write a chunk once tokenised: the sequences of its kept lists (none longer than `max_length`)."""
    chunk, tied, lists, future = pending
    fast, result = future.result()
    if fast:
        done = _kept(flatten(tokenizer, result, writer.dtype), lists, max_length)
    else:
        done = _assembled(assemble(lists, result, max_length), writer.dtype)
    writer.add(chunk, tied, done)


def _kept(flat: Flat, lists: list[RankedList], max_length: int | None) -> Done:
    """The lists' sequences, back to back in `flat`, without the lists that have one over `max_length`."""
    ks = np.fromiter((rl.k for rl in lists), np.int64, count=len(lists))  # (L,) responses per list
    ok = np.ones(len(lists), bool)
    if max_length is not None and len(lists):
        starts = np.cumsum(ks) - ks  # (L,) each list's first sequence
        ok = np.maximum.reduceat(flat.lens, starts) <= max_length  # (L,) its longest fits
    return flat.select(np.repeat(ok, ks)), ok, np.zeros(len(lists), np.int64)


def _assembled(done: list[tuple[Any, int]], dtype: np.dtype) -> Done:
    """`assemble`'s (EncodedList or None, cut) per list as flat arrays."""
    kept = [enc for enc, _ in done if enc is not None]
    seqs = [ids for enc in kept for ids in enc.ids]
    lens = np.fromiter(map(len, seqs), np.int64, count=len(seqs))  # (S,)
    types = None
    if kept and kept[0].type_ids is not None:
        types = np.fromiter(chain.from_iterable(t for enc in kept for t in enc.type_ids), np.uint8, int(lens.sum()))
    ids = np.fromiter(chain.from_iterable(seqs), dtype, count=int(lens.sum()))
    ok = np.array([enc is not None for enc, _ in done], bool)
    return Flat(ids, types, lens), ok, np.array([cut for _, cut in done], np.int64)
