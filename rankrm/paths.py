"""The one data root of a machine: `$RANKRM_DATA_DIR`, else `data` under the working directory.

The configs read the same variable as `paths.data_dir` (`${paths.data_dir}/<folder>/...`); the
scripts and the ablation runner read it here, and hand it to the runs they launch as an absolute
path (a run may start in another directory).
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "RANKRM_DATA_DIR"
DEFAULT_DATA_DIR = "data"


def data_root() -> Path:
    """The data root as an absolute path (it need not exist)."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser().resolve()


CACHE_DIR_ENV = "RANKRM_CACHE_DIR"
DATA_CACHE_DIR_ENV = "RANKRM_DATA_CACHE_DIR"


def cache_root() -> Path:
    """rankrm's cache folder (converted models, token caches): `$RANKRM_CACHE_DIR`, else the user cache dir."""
    env = os.environ.get(CACHE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_cache_dir("rankrm"))


def data_cache_root(configured: str | None = None) -> Path:
    """Where token caches live (it need not exist): `data.cache_dir`, else `$RANKRM_DATA_CACHE_DIR` (tokens
    can take GBs: a scratch disk), else `data/` under `cache_root()`."""
    given = configured or os.environ.get(DATA_CACHE_DIR_ENV)
    return Path(given).expanduser() if given else cache_root() / "data"
