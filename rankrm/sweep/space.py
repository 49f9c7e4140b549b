"""Search spaces and objectives of a sweep: parsed from `conf/sweep/*.yaml`, sampled through Optuna.

A space is a mapping `name -> spec` where `name` is any training config field (`optimizer.lr`,
`loss.kwargs.margin`) or a config group (`loss`, `backbone`), and spec is one of
  {type: choice, choices: [...]}
  {type: int,    low: 2, high: 8, step: 1, log: false}
  {type: float,  low: 1e-5, high: 1e-3, step: null, log: true}
plus an optional `when: {other_param: [values]}`: the param is only sampled (and passed to
training) when every named earlier param took one of the listed values (Optuna's define-by-run
conditional spaces, e.g. a margin that only the pairwise loss uses).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from rankrm.errors import RankrmError
from rankrm.overrides import Value

_KEYS = {"choice": {"choices"}, "int": {"low", "high", "step", "log"}, "float": {"low", "high", "step", "log"}}
_DIRECTIONS = {"maximize": "maximize", "max": "maximize", "minimize": "minimize", "min": "minimize"}
_NAME = re.compile(r"[A-Za-z_][\w]*(\.[\w]+)*")


@dataclass(frozen=True)
class Param:
    """One searched field; `when` maps earlier param names to the values that activate this one."""

    name: str
    type: str
    spec: dict[str, Any]
    when: dict[str, tuple[Value, ...]] = field(default_factory=dict)

    @property
    def is_group(self) -> bool:
        """An undotted name selects a config group (`loss=pairwise`) or sets a top-level field."""
        return "." not in self.name


@dataclass(frozen=True)
class Objective:
    metric: str  # "val/pair_acc" -> metrics.json["val"]["pair_acc"]; "wall_time_s" -> top level
    direction: str  # "maximize" | "minimize"


def parse_space(params: Mapping[str, Any] | None) -> list[Param]:
    """Validate a `params:` mapping (order kept: conditions may only refer to earlier params)."""
    if not params:
        raise RankrmError("sweep has no `params`: add at least one searched field")
    space: list[Param] = []
    for name, spec in params.items():
        where = f"params.{name}"
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise RankrmError(f"{where}: not a config field name")
        if not isinstance(spec, Mapping) or spec.get("type") not in _KEYS:
            raise RankrmError(f"{where}: needs `type: choice | int | float`, got {spec!r}")
        kind = spec["type"]
        extra = set(spec) - _KEYS[kind] - {"type", "when"}
        if extra:
            raise RankrmError(f"{where}: unknown key(s) {sorted(extra)} for type {kind}")
        body = {k: v for k, v in spec.items() if k in _KEYS[kind]}
        _check_body(where, kind, body)
        when = _parse_when(where, spec.get("when"), {p.name: p for p in space})
        space.append(Param(name, kind, body, when))
    return space


def _check_body(where: str, kind: str, body: dict[str, Any]) -> None:
    if kind == "choice":
        choices = body.get("choices")
        if not isinstance(choices, (list, tuple)) or not choices:
            raise RankrmError(f"{where}: `choices` must be a non-empty list")
        if any(c is not None and not isinstance(c, (bool, int, float, str)) for c in choices):
            raise RankrmError(f"{where}: choices must be numbers, strings, booleans or null")
        body["choices"] = list(choices)
        return
    if "low" not in body or "high" not in body:
        raise RankrmError(f"{where}: `low` and `high` are required")
    low, high = body["low"], body["high"]
    num = int if kind == "int" else (int, float)
    if isinstance(low, bool) or isinstance(high, bool) or not isinstance(low, num) or not isinstance(high, num):
        raise RankrmError(f"{where}: low/high must be {'integers' if kind == 'int' else 'numbers'}")
    if not low <= high:
        raise RankrmError(f"{where}: low ({low}) > high ({high})")
    if body.get("log") and low <= 0:
        raise RankrmError(f"{where}: log scale needs low > 0")
    if body.get("log") and body.get("step") not in (None, 1):
        raise RankrmError(f"{where}: `step` cannot be combined with `log: true`")


def _parse_when(where: str, when: Any, earlier: Mapping[str, Param]) -> dict[str, tuple[Value, ...]]:
    if when is None:
        return {}
    if not isinstance(when, Mapping):
        raise RankrmError(f"{where}.when: expected a mapping param -> value(s)")
    out: dict[str, tuple[Value, ...]] = {}
    for other, values in when.items():
        if other not in earlier:
            raise RankrmError(f"{where}.when: {other!r} must be a param listed before {where}")
        out[other] = tuple(values) if isinstance(values, (list, tuple)) else (values,)
    return out


def sample(trial: Any, space: list[Param]) -> dict[str, Value]:
    """Ask `trial` (an optuna.Trial) for every active param; returns {name: value} in space order."""
    chosen: dict[str, Value] = {}
    for p in space:
        if any(chosen.get(k, _MISSING) not in vals for k, vals in p.when.items()):
            continue  # inactive branch: the param is neither sampled nor passed to training
        if p.type == "choice":
            chosen[p.name] = trial.suggest_categorical(p.name, p.spec["choices"])
        elif p.type == "int":
            chosen[p.name] = trial.suggest_int(
                p.name, p.spec["low"], p.spec["high"], step=p.spec.get("step") or 1, log=bool(p.spec.get("log"))
            )
        else:
            chosen[p.name] = trial.suggest_float(
                p.name,
                float(p.spec["low"]),
                float(p.spec["high"]),
                step=p.spec.get("step"),
                log=bool(p.spec.get("log")),
            )
    return chosen


_MISSING = object()


def parse_objectives(objectives: Any) -> list[Objective]:
    """`[{metric: val/pair_acc, direction: maximize}, ...]` -> Objectives (names must be distinct)."""
    if not isinstance(objectives, (list, tuple)) or not objectives:
        raise RankrmError("`objectives` must be a non-empty list of {metric, direction}")
    out = []
    for i, o in enumerate(objectives):
        if not isinstance(o, Mapping) or set(o) != {"metric", "direction"}:
            raise RankrmError(f"objectives[{i}]: expected {{metric: ..., direction: maximize|minimize}}, got {o!r}")
        if str(o["direction"]).lower() not in _DIRECTIONS:
            raise RankrmError(f"objectives[{i}]: direction must be maximize or minimize, got {o['direction']!r}")
        out.append(Objective(str(o["metric"]), _DIRECTIONS[str(o["direction"]).lower()]))
    if len({o.metric for o in out}) != len(out):
        raise RankrmError("objectives: each metric may appear once")
    return out
