"""`data.source` options: declared once, by the parameters with defaults of a registered function.

A source's read function (`sources.SOURCES`) and a format's record function (`formats.FORMATS`)
say which options they take, with type hints and defaults, in their signature. `declared`
reads them; `check_value` tests a configured value against the hint, so a bad value fails
in one line (`data.source.k='six' must be an integer`) before anything is read.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankrm.errors import RankrmError


@dataclass(frozen=True)
class Option:
    hint: Any
    default: Any


def declared(fn: Callable[..., Any]) -> dict[str, Option]:
    """The options of `fn`: its parameters that have a default (context parameters have none)."""
    hints = typing.get_type_hints(fn)
    params = inspect.signature(fn).parameters.values()
    return {p.name: Option(hints.get(p.name, Any), p.default) for p in params if p.default is not p.empty}


def _args(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) or (Any, Any)


def matches(value: Any, hint: Any) -> bool:
    """Whether a plain config value (str, number, bool, None, list, dict) fits a type hint."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(matches(value, h) for h in typing.get_args(hint))
    if hint is type(None) or hint is None:
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple, Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple)) and all(matches(v, _args(hint)[0]) for v in value)
    if origin in (dict, Mapping) or hint is dict:
        key, val = _args(hint)
        return isinstance(value, dict) and all(matches(k, key) and matches(v, val) for k, v in value.items())
    return isinstance(value, hint)


_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", type(None): "null"}
_PLURAL = {str: "strings", int: "integers", float: "numbers", bool: "booleans", type(None): "nulls"}


def describe(hint: Any, plural: bool = False) -> str:
    """`str | None` -> "a string or null"; `Sequence[float]` -> "a list of numbers"."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(describe(h, plural) for h in typing.get_args(hint))
    if origin in (list, tuple, Sequence):
        return f"{'lists' if plural else 'a list'} of {describe(_args(hint)[0], True)}"
    if origin in (dict, Mapping):
        key, val = _args(hint)
        return f"{'mappings' if plural else 'a mapping'} of {describe(key, True)} to {describe(val, True)}"
    names = _PLURAL if plural else _NAMES
    return names.get(hint, getattr(hint, "__name__", str(hint)))


def check_value(name: str, value: Any, option: Option) -> None:
    """Raise one line naming `data.source.<name>`, its value and what it must be."""
    if not matches(value, option.hint):
        raise RankrmError(f"data.source.{name}={value!r} must be {describe(option.hint)}")
