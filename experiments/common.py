"""Shared pieces of the ablation runner and the aggregator: where specs, runs and results live.

An ablation is `conf/experiment/<name>.yaml`: the shared training settings, plus an `ablation:`
block (read here, ignored by `rankrm.train`) with the arms, the seeds and the budgets.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf
from scipy import stats

from rankrm import CONF_DIR as RANKRM_CONF

ROOT = Path(__file__).resolve().parents[1]
CONF_DIR = RANKRM_CONF / "experiment"
EXP_DIR = ROOT / "experiments"
# The order (#6): the ablations run, and appear in RESULTS.md, in this order; any other
# conf/experiment/*.yaml follows alphabetically.
ORDER = [
    "lists_vs_pairs",
    "loss_family",
    "list_length",
    "margin",
    "what_trains",
    "pooling",
    "pooling_oasst",
    "overlong",
    "loss_family_oasst",
    "seed_tsv",
    "batching",
    "ties",
    "ties_oasst",
]


@dataclass(frozen=True)
class Spec:
    """The `ablation:` block of one experiment config."""

    name: str
    title: str
    paper: str
    arms: dict[str, dict[str, list[str]]]  # arm -> {"all": overrides, <budget>: overrides for that budget only}
    seeds: list[int]
    budgets: dict[str, list[str]]
    gpu_arms: list[str]  # arms too slow for a shared CPU: run only with --budget full
    note: str  # caveat printed under the table (how to read it), or ""
    extra_columns: list[str]  # metric paths shown besides the standard columns, e.g. val/loss
    paired_to: dict[str, str]  # arm -> the arm its Δ columns are paired with (default: the table's first arm)

    def arm_overrides(self, arm: str, budget: str) -> list[str]:
        """The arm's own overrides at this budget."""
        return self.arms[arm]["all"] + self.arms[arm].get(budget, [])


def experiment_names() -> list[str]:
    """Every conf/experiment/*.yaml, in ORDER first."""
    found = sorted(p.stem for p in CONF_DIR.glob("*.yaml"))
    return [n for n in ORDER if n in found] + [n for n in found if n not in ORDER]


def load_spec(name: str) -> Spec:
    """Read the `ablation:` block of conf/experiment/<name>.yaml."""
    path = CONF_DIR / f"{name}.yaml"
    if not path.is_file():
        raise SystemExit(f"unknown ablation {name!r}: choose from {', '.join(experiment_names())}")
    block: dict[str, Any] = OmegaConf.to_container(OmegaConf.load(path).ablation)  # type: ignore[assignment]
    bad = sorted({a for pair in (block.get("paired_to") or {}).items() for a in pair} - set(block["arms"]))
    if bad:
        raise SystemExit(f"{path}: ablation.paired_to names arms that do not exist: {', '.join(bad)}")
    return Spec(
        name=name,
        title=block["title"],
        paper=block["paper"],
        arms={k: _arm(v) for k, v in block["arms"].items()},
        seeds=list(block["seeds"]),
        budgets={k: list(v) for k, v in block["budgets"].items()},
        gpu_arms=list(block.get("gpu_arms") or []),
        note=block.get("note") or "",
        extra_columns=list(block.get("extra_columns") or []),
        paired_to=dict(block.get("paired_to") or {}),
    )


def _arm(value: list[str] | dict[str, list[str]]) -> dict[str, list[str]]:
    """An arm is a list of overrides, or {all: [...], <budget>: [...]} when it depends on the budget."""
    if isinstance(value, list):
        return {"all": list(value)}
    return {"all": list(value.get("all") or []), **{k: list(v) for k, v in value.items() if k != "all"}}


def result_path(results_dir: Path, ablation: str, budget: str, arm: str, seed: int) -> Path:
    """experiments/results/<ablation>/<budget>/<arm>/seed<s>.json"""
    return results_dir / ablation / budget / arm / f"seed{seed}.json"


def command_line(ablation: str, budget: str, seeds: list[int] | None = None) -> str:
    """The runner command a reader can paste."""
    seed_part = f" --seeds {' '.join(map(str, seeds))}" if seeds else ""
    return f"python experiments/run.py {ablation} --budget {budget}{seed_part}"


def mean_ci(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of the Student-t confidence interval (nan half-width below 2 values)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan
    sem = x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(stats.t.ppf(0.5 + confidence / 2, len(x) - 1) * sem)
