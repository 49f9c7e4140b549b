"""The conversion cache: one directory per converted source, written once and atomically.

Lives in `$RANKRM_CACHE_DIR`, else `platformdirs.user_cache_dir("rankrm")`. Each entry is a transformers
directory named `<slug>-<12 hex digits of sha256(key)>`; the key is the converter's (whatever identifies
the source and the code that converts it). Space: one converted copy per key, never pruned; a stale
entry (source changed, so its key changed) stays until the cache dir is deleted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from rankrm.paths import cache_root

log = logging.getLogger(__name__)

# A finished entry has it: `save_pretrained` writes it, and the rename publishes the whole dir at once.
DONE_MARKER = "config.json"


def cached_dir(name: str, key: str, convert: Callable[[Path], None], what: str) -> Path:
    """The cache entry for `key`, made by `convert(empty_dir)` on the first call only.

    `name` gives the entry a readable prefix; `what` says in the log what is converted. The entry is
    written under a temporary name and renamed, so an interrupted conversion leaves no entry; when
    another process finished the same entry first, its copy is kept.
    """
    slug = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")
    final = cache_root() / f"{slug}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"
    if (final / DONE_MARKER).is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        log.warning("converting %s to %s (once)", what, final)
        convert(tmp)
        try:
            os.rename(tmp, final)
        except OSError:  # another process finished first: keep its copy
            if not (final / DONE_MARKER).is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final
