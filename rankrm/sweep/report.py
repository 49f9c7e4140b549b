"""`report.md` of a sweep: trial table, Pareto front, best params per objective, importances, figures.

Everything is read back from the Optuna storage (the trials' user attrs hold their val metrics,
overrides and errors), so `report_only=true` can rebuild it at any time, also mid-sweep.
"""

from __future__ import annotations

import shlex
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rankrm.io import atomic_write_text
from rankrm.launch import metric_value
from rankrm.sweep.space import Objective
from rankrm.sweep.study import PRUNED_ATTR, PRUNER_ATTR, retried

MIN_TRIALS_FOR_IMPORTANCE = 4  # fewer completed trials give importances that mean nothing
SHOWN_METRICS = ("val/pair_acc", "val/kendall_tau")  # always in the table, objectives or not


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|")


def _note(t: FrozenTrial, again: dict[int, FrozenTrial]) -> str:
    a = t.user_attrs
    if t.number in again:
        retry = again[t.number]
        # Studies of older rankrm versions kept the reason on the dead trial, as `error: <why>; re-queued`.
        why = retry.user_attrs.get("retry_reason") or str(a.get("error", "worker died")).split(";")[0]
        return f"{why}; re-queued as #{retry.number}"
    if t.state == TrialState.PRUNED:
        return f"pruned at step {a.get(PRUNED_ATTR, '?')}"
    if t.state == TrialState.FAIL:
        lines = str(a.get("error", "")).splitlines()
        errs = [ln for ln in lines if "error" in ln.lower()]  # `rankrm: error: ...`, `ValueError: ...`
        return (errs or lines or [""])[-1][:160]
    if "retry_of" in a:
        return f"retry of {a['retry_of']}"
    return ""


def _seconds(t: FrozenTrial) -> float | None:
    if "seconds" in t.user_attrs:
        return t.user_attrs["seconds"]
    if t.datetime_start and t.datetime_complete:
        return (t.datetime_complete - t.datetime_start).total_seconds()
    return None


def param_names(study: optuna.Study) -> list[str]:
    """Every param any trial sampled, in first-seen order."""
    names: dict[str, None] = {}
    for t in study.get_trials(deepcopy=False):
        names.update(dict.fromkeys(t.params))
    return list(names)


def _table(header: Sequence[str], rows: list[list[Any]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return out + ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]


def _trials_table(study: optuna.Study, objectives: list[Objective], params: list[str]) -> list[str]:
    metrics = [*SHOWN_METRICS, *(o.metric for o in objectives if o.metric not in SHOWN_METRICS)]
    header = ["#", "state", *params, *metrics, "time (s)", "note"]
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    rows = [
        [
            t.number,
            t.state.name,
            *(t.params.get(p) for p in params),
            *(metric_value(t.user_attrs, m) for m in metrics),
            _seconds(t),
            _note(t, again),
        ]
        for t in trials
    ]
    return _table(header, rows)


def _front(study: optuna.Study, objectives: list[Objective], params: list[str]) -> list[str]:
    best = study.best_trials  # the Pareto front; for one objective, the best trial(s)
    if not best:
        return ["No completed trial yet."]
    lead = (
        f"{len(best)} trial(s) that no other trial beats on every objective."
        if len(objectives) > 1
        else f"{len(best)} trial(s) with the best value."
    )
    rows = [[t.number, *t.values, *(t.params.get(p) for p in params)] for t in sorted(best, key=lambda t: t.number)]
    return [lead, ""] + _table(["#", *(o.metric for o in objectives), *params], rows)


def _best_per_objective(study: optuna.Study, objectives: list[Objective]) -> list[str]:
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    out: list[str] = []
    for i, o in enumerate(objectives):
        if not done:
            break
        pick = max if o.direction == "maximize" else min
        t = pick(done, key=lambda t: t.values[i])
        out += [f"### {o.metric} ({o.direction}): {t.values[i]:.4f}, trial {t.number}", ""]
        out += [f"- `{k}`: {_fmt(v)}" for k, v in t.params.items()]
        overrides = t.user_attrs.get("overrides")
        if overrides is not None:
            out += ["", "Reproduce: `python -m rankrm.train " + shlex.join(overrides) + "`"]
        out.append("")
    return out or ["No completed trial yet."]


def importances(study: optuna.Study, index: int) -> tuple[dict[str, float], str | None]:
    """Param importances for objective `index` (PED-ANOVA), or ({}, why) when they cannot be told."""
    n = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))
    if n < MIN_TRIALS_FOR_IMPORTANCE:
        return {}, f"{n} completed trial(s); importances need at least {MIN_TRIALS_FOR_IMPORTANCE}"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            imp = optuna.importance.get_param_importances(study, target=lambda t: t.values[index])
    except (ValueError, RuntimeError, ZeroDivisionError, ImportError) as e:  # Optuna < 5: fANOVA needs sklearn
        return {}, f"not computable: {e}"
    if not imp:
        return {}, "no param was sampled in every completed trial"
    return dict(imp), None


def _importance_section(study: optuna.Study, objectives: list[Objective]) -> list[str]:
    out = [
        "PED-ANOVA (Optuna's default): how differently each param is distributed in the top trials "
        "than in all completed trials; a conditional param counts only where it was sampled.",
        "",
    ]
    for i, o in enumerate(objectives):
        imp, why = importances(study, i)
        out += [f"### {o.metric}", ""]
        out += [f"_{why}._"] if why else _table(["param", "importance"], [[k, v] for k, v in imp.items()])
        out.append("")
    return out


def write_report(study: optuna.Study, sweep_dir: Path, objectives: list[Objective], storage: str, browse: str) -> Path:
    """Write `<sweep_dir>/report.md` and `<sweep_dir>/figures/*.png`; returns the report path.
    `storage`: the URL as shown (password masked); `browse`: the `optuna-dashboard` argument."""
    from rankrm.sweep.plots import write_figures

    trials = study.get_trials(deepcopy=False)
    states = {s.name: sum(t.state == s for t in trials) for s in TrialState if any(t.state == s for t in trials)}
    pruner = study.user_attrs.get(PRUNER_ATTR, {}).get("name", "none")
    params = param_names(study)
    figures = write_figures(study, objectives, params, sweep_dir / "figures")
    lines = [
        f"# Sweep `{study.study_name}`",
        "",
        f"- objectives: {', '.join(f'`{o.metric}` ({o.direction})' for o in objectives)}",
        f"- trials: {len(trials)} ({', '.join(f'{k.lower()} {v}' for k, v in states.items())})",
        f"- pruner: {pruner}" + (" (multi-objective: Optuna cannot prune)" if len(objectives) > 1 else ""),
        f"- storage: `{storage}` (browse: `optuna-dashboard {browse}`)",
        "",
        "## Trials",
        "",
        *_trials_table(study, objectives, params),
        "",
        "## Pareto front" if len(objectives) > 1 else "## Best trial",
        "",
        *_front(study, objectives, params),
        "",
        "## Best params per objective",
        "",
        *_best_per_objective(study, objectives),
        "## Parameter importances",
        "",
        *_importance_section(study, objectives),
        "## Figures",
        "",
        *(f"![{p.stem}](figures/{p.name})" for p in figures),
        "",
    ]
    return atomic_write_text(sweep_dir / "report.md", "\n".join(lines))
