"""Figures for experiments/RESULTS.md, drawn from run records only (see aggregate.py)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from common import mean_ci  # noqa: E402

Records = dict[str, list[dict[str, Any]]]  # arm -> one record per seed
BARS = [
    ("val/pair_acc", "val pair accuracy"),
    ("val/kendall_tau", "val Kendall τ"),
    ("test/pair_acc", "test pair accuracy"),
]


def _mean_ci(values: list[float]) -> tuple[float, float]:
    """Error bar: the run records' 95% t interval, 0 when there is a single seed."""
    m, h = mean_ci(values)
    return m, 0.0 if np.isnan(h) else h


def bar_figure(
    name: str, budget: str, arms: Records, fig_dir: Path, metric: Callable[[dict[str, Any], str], float | None]
) -> Path | None:
    """Mean ± 95% CI per arm for the headline metrics, seeds as dots."""
    if not arms:
        return None
    fig, axes = plt.subplots(1, len(BARS), figsize=(4.2 * len(BARS), 3.4), squeeze=False)
    for ax, (path, label) in zip(axes[0], BARS):
        for i, recs in enumerate(arms.values()):
            vals = [v for r in recs if (v := metric(r, path)) is not None]
            if not vals:
                continue
            m, h = _mean_ci(vals)
            ax.bar(i, m, yerr=h, capsize=4, color="C0", alpha=0.6)
            ax.plot([i] * len(vals), vals, "k.", ms=4)
        ax.set_xticks(range(len(arms)), list(arms), rotation=30, ha="right", fontsize=8)
        ax.set_title(label, fontsize=10)
        lo = min((v for recs in arms.values() for r in recs if (v := metric(r, path)) is not None), default=0.0)
        ax.set_ylim(max(-1.0, lo - 0.1), 1.0)
    fig.suptitle(f"{name} ({budget}): mean ± 95% CI over seeds", fontsize=10)
    fig.tight_layout()
    return _save(fig, fig_dir / f"{name}_{budget}.png")


def curve_figure(name: str, budget: str, arms: Records, fig_dir: Path) -> Path | None:
    """Val pair accuracy and val loss per epoch and per training sequences encoded (multi-epoch runs only)."""
    if not any(len(r.get("val_curve", [])) > 1 for recs in arms.values() for r in recs):
        return None
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for c, (arm, recs) in enumerate(arms.items()):
        curves = [r["val_curve"] for r in recs if r.get("val_curve")]
        n = min(len(cv) for cv in curves)
        epochs = np.arange(1, n + 1)
        acc = np.array([[p["pair_acc"] for p in cv[:n]] for cv in curves])  # (seeds, epochs)
        loss = np.array([[p["loss"] for p in cv[:n]] for cv in curves])  # (seeds, epochs)
        # each epoch encodes the same sequences: total / epochs per epoch
        per_epoch = np.mean(
            [r["metrics"]["train"]["sequences_encoded"] / max(1, r["metrics"]["train"]["epochs"]) for r in recs]
        )
        for ax, x, y in ((axes[0], epochs, acc), (axes[1], epochs, loss), (axes[2], epochs * per_epoch, acc)):
            ax.plot(x, y.mean(0), "o-", color=f"C{c}", label=arm)
            ax.fill_between(x, y.min(0), y.max(0), color=f"C{c}", alpha=0.15)
    for ax, (xl, yl) in zip(
        axes,
        [("epoch", "val pair accuracy"), ("epoch", "val loss"), ("training sequences encoded", "val pair accuracy")],
    ):
        ax.set_xlabel(xl)
        ax.set_ylabel(yl)
        ax.legend(fontsize=8)
    fig.suptitle(f"{name} ({budget}): mean over seeds, band = min..max", fontsize=10)
    fig.tight_layout()
    return _save(fig, fig_dir / f"{name}_{budget}_curves.png")


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
