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
