"""Crash-safe file output: a killed run never leaves a half-written file that looks complete.

Each writer writes a hidden temp file in the target's directory (same filesystem, so the final
rename is atomic), fsyncs it, renames it over the target and fsyncs the directory. A failure at
any point leaves the old file (or none) and no temp file. Light: json/os only (no torch).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write `data` to `path` atomically (temp file in the same directory, fsync, rename, fsync dir)."""
    return atomic_write_with(path, lambda f: f.write(data))


def atomic_write_with(path: str | os.PathLike[str], write: Callable[[BinaryIO], Any]) -> Path:
    """`write(f)` into a temp file beside `path`, then fsync, rename over `path`, fsync the directory.
    Streams: a multi-GB checkpoint (`torch.save(ckpt, f)`) is never held in memory as bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """JSON with non-finite floats written as null: NaN and Infinity are not JSON (jq, JavaScript and
    strict parsers reject them), and a split without pairs has a NaN pair accuracy."""
    text = json.dumps(_finite(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _finite(x: Any) -> Any:
    """Containers, torch / numpy values -> plain JSON values; NaN and +-inf -> None."""
    if hasattr(x, "tolist"):  # torch / numpy scalars and arrays
        x = x.tolist()
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x
