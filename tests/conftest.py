"""Test-wide settings: offline, quiet, single-threaded torch (pytest-xdist runs one worker per core)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator

import pytest

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


@pytest.fixture(autouse=True)
def _no_hydra_state_between_tests() -> Iterator[None]:
    """A runner called in-process (`rankrm.train.main()`) leaves Hydra's run config set; a later test's
    `${hydra:runtime.output_dir}` would resolve against that stale run (to null). Each test starts clean."""
    yield
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().cfg = None
    GlobalHydra.instance().clear()
