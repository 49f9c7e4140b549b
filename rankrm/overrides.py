"""Hydra command-line overrides as the launchers build them: the key one sets, merging lists, quoting values.

Sweeps, ablations (`experiments/run.py`) and benchmarks (`scripts/`) all assemble a runner's
command line from override lists; these are the rules they share.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping

from rankrm.errors import RankrmError

Value = bool | int | float | str | None
_BARE = re.compile(r"[A-Za-z_][\w\-./]*")  # Hydra reads these unquoted as the same string
_RESERVED = {"true", "false", "null", "none", "nan", "inf"}  # words Hydra would not read as strings


def override_key(override: str) -> str:
    """The key an override sets: `++a.b=1` -> `a.b`, `~x` -> `x`, `loss=pairwise` -> `loss`."""
    return override.split("=", 1)[0].lstrip("+~")


def merge_overrides(*groups: Iterable[str]) -> list[str]:
    """Concatenate override lists; a later override of a key replaces every earlier one of it, and
    stands where the later one stood (so the order shows what came last)."""
    merged: dict[str, str] = {}
    for group in groups:
        for o in group:
            merged.pop(override_key(o), None)  # re-insert: the key moves to its last position
            merged[override_key(o)] = o
    return list(merged.values())


def hydra_value(v: Value) -> str:
    """Render a value for a Hydra command-line override ('1' or 'true' as strings get quoted)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if not math.isfinite(v):
            raise RankrmError(f"cannot pass non-finite value {v} as an override")
        return repr(v)
    if _BARE.fullmatch(v) and v.lower() not in _RESERVED:
        return v
    # Hydra quoted strings: only backslashes right before a quote (or the closing quote) are escapes.
    v = re.sub(r"(\\+)(?='|$)", lambda m: m.group(1) * 2, v)
    return "'" + v.replace("'", "\\'") + "'"


def to_overrides(values: Mapping[str, Value]) -> list[str]:
    """{key: value} -> overrides: groups/top-level fields as `k=v`, nested fields as `++k=v`
    (`++` adds the key when the chosen group lacks it, e.g. a loss kwarg absent from its yaml)."""
    return [f"{k}={hydra_value(v)}" if "." not in k else f"++{k}={hydra_value(v)}" for k, v in values.items()]
