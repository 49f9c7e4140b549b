"""Sweep figures (matplotlib, Agg): optimisation history, Pareto front, objective vs each param."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never needs a display
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution  # noqa: E402
from optuna.trial import FrozenTrial, TrialState  # noqa: E402

from rankrm.sweep.space import Objective  # noqa: E402

MAX_PARAMS = 8  # columns of the param figure; more would be unreadable


def _slug(metric: str) -> str:
    return re.sub(r"[^\w@]+", "_", metric).strip("_")


def _save(fig: Any, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def history(done: list[FrozenTrial], objectives: list[Objective], path: Path) -> Path:
    """Each objective per trial number, with the best-so-far line."""
    fig, axes = plt.subplots(1, len(objectives), figsize=(5 * len(objectives), 3.6), squeeze=False)
    for i, (o, ax) in enumerate(zip(objectives, axes[0])):
        xs = [t.number for t in done]
        ys = [t.values[i] for t in done]
        pick = max if o.direction == "maximize" else min
        best = [pick(ys[: k + 1]) for k in range(len(ys))]
        ax.scatter(xs, ys, s=18, label="trial")
        ax.step(xs, best, where="post", color="C3", label="best so far")
        ax.set(xlabel="trial", ylabel=o.metric, title=f"{o.metric} ({o.direction})")
        ax.legend(fontsize=8)
    return _save(fig, path)


def pareto(study: optuna.Study, done: list[FrozenTrial], objectives: list[Objective], path: Path) -> Path:
    """First two objectives of every completed trial; the Pareto front highlighted and numbered."""
    front = {t.number for t in study.best_trials}
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    rest = [t for t in done if t.number not in front]
    best = sorted((t for t in done if t.number in front), key=lambda t: t.values[0])
    ax.scatter([t.values[0] for t in rest], [t.values[1] for t in rest], s=18, color="C0", label="trial")
    ax.plot([t.values[0] for t in best], [t.values[1] for t in best], "o-", color="C3", label="Pareto front")
    for t in best:
        ax.annotate(str(t.number), (t.values[0], t.values[1]), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(
        xlabel=f"{objectives[0].metric} ({objectives[0].direction})",
        ylabel=f"{objectives[1].metric} ({objectives[1].direction})",
        title="Pareto front",
    )
    ax.legend(fontsize=8)
    return _save(fig, path)


def _param_axis(ax: Any, dist: Any, values: list[Any]) -> list[Any]:
    """x positions for a param's values: categories become indices; log ranges get a log axis."""
    if isinstance(dist, CategoricalDistribution):
        choices = list(dist.choices) + [v for v in dict.fromkeys(values) if v not in dist.choices]
        ax.set_xticks(range(len(choices)), [str(c) for c in choices], rotation=30, fontsize=7)
        ax.set_xlim(-0.5, len(choices) - 0.5)  # every choice visible, sampled or not
        return [choices.index(v) for v in values]
    if isinstance(dist, (FloatDistribution, IntDistribution)):
        if dist.log:
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels overlap on short log ranges
            ax.set_xlim(dist.low / 1.15, dist.high * 1.15)
        else:
            pad = 0.05 * (dist.high - dist.low) or 0.5
            ax.set_xlim(dist.low - pad, dist.high + pad)  # the whole searched range, not just the samples
    return values


def params_vs_objective(
    done: list[FrozenTrial], objective: Objective, index: int, params: list[str], path: Path
) -> Path:
    """One panel per param: the objective of each completed trial against the param's value."""
    shown = params[:MAX_PARAMS]
    fig, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), 3.2), squeeze=False, sharey=True)
    for name, ax in zip(shown, axes[0]):
        having = [t for t in done if name in t.params]  # conditional params are absent in some trials
        if having:
            xs = _param_axis(ax, having[-1].distributions[name], [t.params[name] for t in having])
            ax.scatter(
                xs,
                [t.values[index] for t in having],
                s=18,
                c=[t.number for t in having],
                cmap="viridis",
                vmin=0,
                vmax=max(t.number for t in done),
            )  # one colour scale across panels
        ax.set(xlabel=name)
    axes[0][0].set_ylabel(objective.metric)
    fig.suptitle(f"{objective.metric} vs params (colour: trial number)", fontsize=10)
    return _save(fig, path)


def write_figures(study: optuna.Study, objectives: list[Objective], params: list[str], out_dir: Path) -> list[Path]:
    """All figures for the completed trials into `out_dir`; none when nothing completed yet."""
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [history(done, objectives, out_dir / "history.png")]
    if len(objectives) >= 2:
        paths.append(pareto(study, done, objectives, out_dir / "pareto.png"))
    if params:
        for i, o in enumerate(objectives):
            paths.append(params_vs_objective(done, o, i, params, out_dir / f"params_{_slug(o.metric)}.png"))
    return paths
