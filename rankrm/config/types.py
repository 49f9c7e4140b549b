"""The type language of the config schema and its one validator.

A schema field is a dataclass field whose annotation says what it may hold:
`bool`, `int`, `float` (ints accepted), `str`, `Literal[...]` (a choice), `X | None`, unions,
`list[X]`, `tuple[X, Y]` (a list of that length), `dict[str, X]` (a mapping), a nested schema
dataclass, `Target` (a mapping whose `_target_` picks its schema), `Any`; and
`Annotated[int, Range(lo=1)]` for bounds. `check(key, value, type)` raises one `RankrmError` line
naming the key, the value and what is allowed, from the annotation alone, so the text of every
rule is written once.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import types
from collections.abc import Collection, Mapping
from typing import Annotated, Any, ClassVar, Literal, Union, get_args, get_origin, get_type_hints

from rankrm.errors import RankrmError

NoneType = type(None)
HYDRA_KEYS = ("_target_", "_partial_", "_args_", "_recursive_", "_convert_")  # instantiate's own keys


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a number: lo <= v <= hi (`open` bounds exclude the end)."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def ok(self, v: float) -> bool:
        above = self.lo is None or (v > self.lo if self.lo_open else v >= self.lo)
        below = self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)
        return above and below

    def text(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {_num(self.lo)}"
        return f"in {'(' if self.lo_open else '['}{_num(self.lo)}, {_num(self.hi)}{')' if self.hi_open else ']'}"


Count = Annotated[int, Range(lo=1)]  # an integer >= 1
Natural = Annotated[int, Range(lo=0)]  # an integer >= 0
Fraction = Annotated[float, Range(0, 1)]  # a number in [0, 1]
Probability = Annotated[float, Range(0, 1, hi_open=True)]  # a dropout rate: a number in [0, 1)


class Target:
    """A mapping that `hydra.utils.instantiate` builds: its `_target_` picks the schema in TARGETS;
    other targets have their keys checked against the callable's parameters."""


TARGETS: dict[str, type] = {}  # `_target_` string -> schema dataclass (filled by rankrm.config.schema)


def target(*names: str) -> Any:
    """Class decorator: register a schema dataclass for these `_target_` strings."""

    def register(cls: type) -> type:
        TARGETS.update(dict.fromkeys(names, cls))
        return cls

    return register


class Schema:
    """Base of the schema dataclasses. `extra`: what an unknown key is ('error', or 'target': allowed
    when the `_target_` callable takes it); `rules(cfg, key)`: the group's cross-field rules."""

    extra: ClassVar[str] = "error"

    @classmethod
    def rules(cls, cfg: Mapping[str, Any], key: str) -> None:
        return None


def _num(x: float | None) -> str:
    return str(int(x)) if x is not None and float(x).is_integer() else str(x)


def show(v: Any) -> str:
    """A value as the user typed it (YAML spelling for null and booleans)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    return repr(v)


def _members(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def describe(tp: Any, plural: bool = False) -> str:
    """What a type allows, in words ('null or an integer >= 1')."""
    origin, args = get_origin(tp), get_args(tp)
    if origin is Annotated:
        rng = next((a for a in args[1:] if isinstance(a, Range)), None)
        return describe(args[0], plural) + (f" {rng.text()}" if rng else "")
    if origin in (Union, types.UnionType):
        parts = (["null"] if NoneType in args else []) + [describe(a) for a in args if a is not NoneType]
        return ", ".join(parts[:-1]) + " or " + parts[-1]
    if origin is Literal:  # a string that reads as a number is quoted ('16' and 16 are both precisions)
        return "one of " + ", ".join(a if isinstance(a, str) and not a.isdigit() else show(a) for a in args)
    if origin is list:
        return f"a list of {describe(args[0], plural=True)}"
    if origin is tuple:
        if len(set(args)) == 1:
            return f"a list of {len(args)} {describe(args[0], True)}"
        return "a list [" + ", ".join(map(describe, args)) + "]"
    if origin is dict or tp is dict:
        return "a mapping" if not args or args[1] is Any else f"a mapping of names to {describe(args[1], True)}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping with keys {', '.join(f.name for f in dataclasses.fields(tp))}"
    names = {bool: "true or false", int: "integer", float: "number", str: "string", Target: "mapping with a _target_"}
    if tp is Any:
        return "anything"
    word = names.get(tp, getattr(tp, "__name__", str(tp)))
    if tp is bool:
        return word
    return word + "s" if plural else ("an " if word[0] in "aeiou" else "a ") + word


def is_interpolation(v: Any) -> bool:
    """An unresolved `${...}` (only seen when a config is checked without resolving it)."""
    return isinstance(v, str) and "${" in v


def fits(v: Any, tp: Any) -> bool:
    """Whether `v` is a value of the schema type `tp` (nested schemas: their keys are checked by `check`)."""
    origin, args = get_origin(tp), get_args(tp)
    if is_interpolation(v) or tp is Any:
        return True
    if origin is Annotated:
        rng = next((a for a in args[1:] if isinstance(a, Range)), None)
        return fits(v, args[0]) and (rng is None or rng.ok(v))
    if origin in (Union, types.UnionType):
        return any(fits(v, a) for a in args)
    if origin is Literal:
        return any(v == a and type(v) is type(a) for a in args)
    if origin is list:
        return isinstance(v, list) and all(fits(x, args[0]) for x in v)
    if origin is tuple:
        return isinstance(v, list | tuple) and len(v) == len(args) and all(fits(x, a) for x, a in zip(v, args))
    if origin is dict or tp is dict or tp is Target or dataclasses.is_dataclass(tp):
        return isinstance(v, Mapping)
    if tp is NoneType:
        return v is None
    if tp is float:
        return isinstance(v, int | float) and not isinstance(v, bool)
    if tp is int:
        return isinstance(v, int) and not isinstance(v, bool)
    return isinstance(v, tp)


def _close(word: str, choices: list[str]) -> str:
    match = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {match[0]}?)" if match else ""


def check(key: str, v: Any, tp: Any) -> None:
    """Raise RankrmError (one line: key, value, what is allowed) unless `v` fits `tp`, nested keys included."""
    if not fits(v, tp):
        choices = [a for m in _members(tp) if get_origin(m) is Literal for a in get_args(m) if isinstance(a, str)]
        hint = _close(v, choices) if isinstance(v, str) else ""
        raise RankrmError(f"{key} must be {describe(tp)}, got {show(v)}{hint}")
    if not isinstance(v, Mapping):
        return
    for m in _members(tp):
        if m is Target:
            check_target(key, v)
        elif dataclasses.is_dataclass(m):
            check_fields(key, v, m)
        elif get_origin(m) is dict and get_args(m)[1] is not Any:
            for name, x in v.items():
                check(f"{key}.{name}", x, get_args(m)[1])


def check_target(key: str, v: Mapping[str, Any]) -> None:
    """A `Target` mapping: the schema of its `_target_`, or the callable's own parameters."""
    name = v.get("_target_")
    if not isinstance(name, str):
        raise RankrmError(f"{key}._target_ must be the import path of a class or function, got {show(name)}")
    if name in TARGETS:
        check_fields(key, v, TARGETS[name])
    else:
        for field, x in v.items():
            if field not in HYDRA_KEYS:
                _check_parameter(key, field, x, name)


def _join(key: str, name: str) -> str:
    return f"{key}.{name}" if key else name


def check_fields(key: str, v: Mapping[str, Any], schema: type, skip: Collection[str] = ()) -> None:
    """The keys of one mapping (but `skip`) against a schema dataclass, then the schema's cross-field rules."""
    hints = get_type_hints(schema, include_extras=True)
    fields = [f.name for f in dataclasses.fields(schema)]
    for name, x in v.items():
        if name in skip:
            continue
        if name in hints and name in fields:
            check(_join(key, name), x, hints[name])
        elif getattr(schema, "extra", "error") == "target" and isinstance(v.get("_target_"), str):
            _check_parameter(key, name, x, v["_target_"])
        else:
            known = [f for f in fields if f not in HYDRA_KEYS] + list(skip)
            has = f"{key or 'train.yaml'} has: {', '.join(known)}"
            raise RankrmError(f"unknown key {_join(key, name)}={show(x)}{_close(name, known)}; {has}")
    if issubclass(schema, Schema):
        schema.rules(v, key)


def _check_parameter(key: str, name: str, v: Any, target_path: str) -> None:
    """A key that no schema names must be a parameter of the `_target_` (imports it: rare, may be slow)."""
    from hydra.utils import get_object

    try:
        fn = get_object(target_path)
        params = inspect.signature(fn).parameters
    except Exception as e:  # an import error of any kind: the message names it
        raise RankrmError(f"{key}._target_={target_path!r} cannot be imported: {type(e).__name__}: {e}") from None
    if name in params or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    names = [p for p in params if p not in ("self", "params", "optimizer")]
    raise RankrmError(f"unknown key {key}.{name}={show(v)}: {target_path} takes no {name!r}{_close(name, names)}")
