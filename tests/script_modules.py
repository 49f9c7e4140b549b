"""Import a module of `experiments/` or `scripts/` in a test as its sibling scripts see it.

Those folders hold scripts, not packages: a script imports its siblings by bare name
(`from common import ...`, `import bench_common`), which works because Python puts the script's
folder on sys.path. A test loads each module from its file under that bare name instead.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def load(folder: str, name: str) -> ModuleType:
    """`<repo>/<folder>/<name>.py` as module `name` (registered, so siblings importing it get this one)."""
    if name in sys.modules and getattr(sys.modules[name], "__file__", None) == str(ROOT / folder / f"{name}.py"):
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
