"""Figures of an evaluation (matplotlib, Agg): reliability diagram, reward vs length, accuracy by label
gap and rank position; one folder per data spec, `figures/<spec slug>/`. Drawn only from results.json
and scores.jsonl, so they can be redrawn from those files."""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rankrm.io import atomic_write_bytes


def slug(spec: str) -> str:
    """A spec as a folder name: `rewardbench:data/rb.jsonl` -> `rewardbench_data_rb.jsonl`."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", spec).strip("_") or "data"


def _save(fig: Any, path: Path) -> None:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def reliability(cal: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    ax.plot([0, 1], [0, 1], color="0.6", lw=1, ls="--", label="perfect")
    for tag, style in (("before", "o-"), ("after", "s-")):
        pts = cal["reliability"][tag]
        temp = 1.0 if tag == "before" else cal["temperature"]
        ece = cal.get(f"ece_{tag}")
        label = f"{tag}: T={temp:.3g}" + (f", ECE={ece:.3f}" if ece is not None else "")
        ax.plot([p["conf"] for p in pts], [p["freq"] for p in pts], style, ms=4, label=label)
    ax.set(xlabel="predicted P(i > j)", ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1))
    ax.set_title("Reliability of sigmoid((r_i - r_j) / T)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    _save(fig, path)


def reward_length(recs: Sequence[Mapping[str, Any]], rho: float | None, path: Path) -> None:
    import matplotlib.pyplot as plt

    x = np.concatenate([r["lengths"] for r in recs]).astype(float)
    y = np.concatenate([np.asarray(r["rewards"]) - np.mean(r["rewards"]) for r in recs])
    fig, ax = plt.subplots(figsize=(5.2, 3.8))
    ax.scatter(np.maximum(x, 1), y, s=4, alpha=0.35, lw=0)
    ax.set_xscale("log")
    ax.axhline(0, color="0.6", lw=1)
    ax.set(xlabel="response length (characters)", ylabel="reward - mean reward of its list")
    ax.set_title(
        f"Reward vs length (mean within-list Spearman {rho:.3f})" if rho is not None else "Reward vs length",
        fontsize=10,
    )
    _save(fig, path)


def accuracy_breakdown(entry: Mapping[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, key, title in ((axes[0], "by_gap", "label gap"), (axes[1], "by_rank", "rank position (levels)")):
        cells = {k: v for k, v in entry[key].items() if v["pairs"]}
        ax.bar(range(len(cells)), [v["acc"] for v in cells.values()], color="tab:blue")
        ax.set_xticks(range(len(cells)), list(cells), rotation=30, ha="right", fontsize=8)
        for i, v in enumerate(cells.values()):
            ax.text(i, v["acc"] + 0.01, f"n={v['pairs']}", ha="center", fontsize=7)
        ax.set(title=f"pair accuracy by {title}", ylim=(0, 1.08))
    axes[0].set_ylabel("pair accuracy")
    _save(fig, path)


def draw(out_dir: Path, results: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, str]]:
    """All figures of every spec; returns {spec: {figure: path relative to out_dir}}."""
    import matplotlib

    matplotlib.use("Agg")
    out: dict[str, dict[str, str]] = {}
    for spec, entry in results.items():
        rel = Path("figures") / slug(spec)
        recs = [r for r in records if r["spec"] == spec and r["role"] == "eval"]
        paths = {k: rel / f"{k}.png" for k in ("reliability", "reward_length", "accuracy")}
        reliability(entry["calibration"], out_dir / paths["reliability"])
        reward_length(recs, entry["length_bias"].get("spearman_mean"), out_dir / paths["reward_length"])
        accuracy_breakdown(entry, out_dir / paths["accuracy"])
        out[spec] = {k: str(p) for k, p in paths.items()}
    return out
