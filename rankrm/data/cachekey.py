"""Keys of the token cache: a hash of everything that changes the tokens of a data source.

A key covers (see `source_key` and `token_key`):
- the cache layout version (`LAYOUT`) and the `tokenizers` / `transformers` versions;
- the source: its reader, its options (paths, columns, format options...; a builder such as VADER
  also its seed, since it splits before it builds lists) and a sha256 of the *content* of every
  file it reads (a folder: of each file under it; a hub dataset: the `datasets` fingerprints);
- the tokenizer's full serialised state (`save_pretrained`: vocabulary, merges, normalizer,
  special tokens, chat template, model input names), minus the truncation / padding settings
  that `transformers` resets on every call;
- `max_length` (after the tokenizer's cap), `overlong` and `truncation_side`;
- the input format (`rankrm.inputs.InputFormat.to_metadata()`: `data.prompt_joiner`), so two formats never
  share an entry (it changes a decoder's tokens; an encoder's text pairs ignore it, but it is keyed all the same).
Not in the key, because they are applied when the cache is read: the seed of row sources
(carving, limits, pair shuffling, batch order), `fractions`, `limit_*`, `as_pairs`, batching.
`skip_invalid` is not in it either: a cache holds the drop counts, and a run without it stops
at the first dropped record's error (see `tokencache`).

Hashing a file reads it once (~330 MB/s here); the digest is remembered in `<cache>/digests/`
with the file's size, mtime, inode and device, so a later run only stats the file. A file
rewritten in place with the same size within one mtime tick would be missed: the stamp
includes the nanosecond mtime, which every write updates on Linux filesystems.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rankrm.data import hf
from rankrm.data.sources import Resolved, hf_inputs
from rankrm.data.validate import check_file
from rankrm.inputs import InputFormat
from rankrm.io import atomic_write_json

LAYOUT = 1  # bump when the cache's files or the meaning of a stored field change
_BLOCK = 1 << 20


def _sha256(data: bytes | str) -> str:
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def stamp(path: Path) -> list[int]:
    """What changes when a file is rewritten: size, mtime (ns), inode, device."""
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def file_digest(path: Path, memo: Path) -> str:
    """sha256 of a file's bytes, remembered under `memo` by the file's `stamp`."""
    path = path.resolve()
    entry = memo / f"{_sha256(str(path))[:32]}.json"
    now = stamp(path)
    try:
        seen = json.loads(entry.read_text())
        if seen["stamp"] == now:
            return seen["sha256"]
    except (OSError, ValueError, KeyError):
        pass
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(_BLOCK):
            h.update(block)
    atomic_write_json(entry, {"path": str(path), "stamp": now, "sha256": h.hexdigest()})
    return h.hexdigest()


def content_digest(entry: str, memo: Path, hub: Callable[[str], str] | None) -> list[Any]:
    """[entry, digest] of one content entry: a file, a folder (of a dataset source: each file under
    it) or a hub id (`hub(entry)`). A missing or empty file fails as reading it would."""
    p = Path(entry).expanduser()
    if hub is not None and p.is_dir():
        root = p.resolve()
        files = sorted(f for f in root.rglob("*") if f.is_file())
        return [str(root), [[str(f.relative_to(root)), file_digest(f, memo)] for f in files]]
    if hub is None or hf.looks_local(entry) or p.exists():
        f = check_file(p).resolve()
        return [str(f), file_digest(f, memo)]
    return [entry, hub(entry)]


def tokenizer_digest(tokenizer: Any) -> str:
    """sha256 of what `save_pretrained` writes (`tokenizer.json` without truncation / padding, which
    `transformers` sets and resets around calls), plus the tokenizer's class."""
    h = hashlib.sha256(type(tokenizer).__name__.encode())
    with tempfile.TemporaryDirectory(prefix="rankrm-tok-") as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).rglob("*")):
            if not f.is_file():
                continue
            data = f.read_bytes()
            if f.name == "tokenizer.json":
                state = json.loads(data)
                state.pop("truncation", None)
                state.pop("padding", None)
                data = json.dumps(state, sort_keys=True).encode()
            h.update(f"{f.relative_to(tmp)}\0{len(data)}\0".encode())
            h.update(data)
    return h.hexdigest()


def _hub(r: Resolved) -> Callable[[str], str] | None:
    """How a source's non-local entries are fingerprinted: hub datasets for `hf`, none for the others."""
    if r.kind.inputs is not hf_inputs:
        return None
    return lambda entry: hf.fingerprint(entry, r.options.get("name"), r.options.get("revision"))


def source_key(r: Resolved, seed: int, memo: Path) -> tuple[str, dict[str, Any]]:
    """(hex key, its parts) of a source's lists: what the token cache and the validation marker share."""
    options = dict(r.options)
    if r.kind.build is None:
        options.pop("fractions", None)  # carving happens when the cache is read
    parts: dict[str, Any] = {
        "layout": LAYOUT,
        "reader": r.reader,
        "options": options,
        "format": None if r.parsing is None else [r.parsing.name, r.parsing.options],
        "content": [content_digest(e, memo, _hub(r)) for e in r.content()],
    }
    if r.kind.build is not None:
        parts["seed"] = seed  # a builder splits (VADER: by text) before it makes lists
    return _sha256(json.dumps(parts, sort_keys=True, default=str)), parts


def token_key(
    source: str, tokenizer: Any, max_length: int | None, overlong: str, truncation_side: str, fmt: InputFormat
) -> tuple[str, dict[str, Any]]:
    """(hex key, its parts) of a source's tokens under one tokenizer and length policy."""
    import tokenizers
    import transformers

    parts = {
        "source": source,
        "tokenizer": tokenizer_digest(tokenizer),
        "max_length": max_length,
        "overlong": overlong,
        "truncation_side": truncation_side,
        "input_format": fmt.to_metadata(),
        "versions": [tokenizers.__version__, transformers.__version__],
    }
    return _sha256(json.dumps(parts, sort_keys=True)), parts
