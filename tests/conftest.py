"""Test-wide settings: offline, quiet, single-threaded torch (pytest-xdist runs one worker per core)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
os.environ.setdefault("MPLBACKEND", "Agg")
# Token caches of this session (runs in subprocesses inherit it) go to a temp dir, not the user's cache.
_DATA_CACHE = tempfile.mkdtemp(prefix="rankrm-test-data-cache-")
os.environ.setdefault("RANKRM_DATA_CACHE_DIR", _DATA_CACHE)
atexit.register(shutil.rmtree, _DATA_CACHE, True)

import torch  # noqa: E402

torch.set_num_threads(1)
