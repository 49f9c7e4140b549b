"""Agreement between annotators (and with a reward model) on the lists both ranked.

For every pair of annotators and every item both ranked: Kendall tau-b between their scores of
the same answers (`scipy.stats.kendalltau`, variant b: ties on both sides; undefined, and left
out of the mean, when one of them tied every answer) and whether the two orders are exactly the
same (same ties too). A table row per pair, then one pooled row over all pairs' shared lists.
Time O(items x annotators^2 x K^2).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

from scipy.stats import kendalltau

from rankrm.label.ranking import aligned

MODEL = "reward model"


def tau_b(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall tau-b of two score vectors over the same answers; NaN when either is constant."""
    if len(set(a)) < 2 or len(set(b)) < 2:
        return math.nan  # scipy warns and returns NaN here; say so without the warning
    return float(kendalltau(a, b, variant="b").statistic)


def same_order(a: Sequence[float], b: Sequence[float]) -> bool:
    """True when every pair of answers is ordered (or tied) the same way in `a` and `b`."""
    sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
    return all(sign(a[i] - a[j]) == sign(b[i] - b[j]) for i in range(len(a)) for j in range(i + 1, len(a)))


@dataclass
class PairStats:
    """Agreement of `a` and `b` over the `lists` items both ranked."""

    a: str
    b: str
    lists: int = 0
    taus: list[float] = field(default_factory=list)
    exact: int = 0

    def add(self, x: Sequence[float], y: Sequence[float]) -> None:
        self.lists += 1
        t = tau_b(x, y)
        if not math.isnan(t):
            self.taus.append(t)
        self.exact += same_order(x, y)

    def row(self) -> dict[str, Any]:
        # Short column names: the table fits the page's sidebar.
        return {
            "annotators": f"{self.a} / {self.b}",
            "lists": self.lists,  # items both ranked
            "tau-b": round(sum(self.taus) / len(self.taus), 3) if self.taus else None,  # mean Kendall tau-b
            "tau on": len(self.taus),  # lists where tau-b is defined (neither side tied everything)
            "exact": round(self.exact / self.lists, 3) if self.lists else None,  # share in the same order and ties
        }


def shown(rows: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Rows as text for people: 3 decimals, '-' where undefined (the page and the summary alike)."""
    fmt = lambda v: "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    return [{k: fmt(v) for k, v in row.items()} for row in rows]


def _views(by_annotator: Mapping[str, dict[str, Any]]) -> dict[str, tuple[tuple[str, ...], list[float]]]:
    return {who: v for who, rec in by_annotator.items() if (v := aligned(rec)) is not None}


def annotator_agreement(rankings: Mapping[str, Mapping[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """Rows per annotator pair with shared lists, then an `all pairs` row; [] when no list has two rankings."""
    pairs: dict[tuple[str, str], PairStats] = {}
    pooled = PairStats("all pairs", "")
    for by in rankings.values():
        views = _views(by)
        for a, b in combinations(sorted(views), 2):
            (ans_a, xa), (ans_b, xb) = views[a], views[b]
            if ans_a != ans_b:  # not the same answers (a hand edit): nothing to compare
                continue
            pairs.setdefault((a, b), PairStats(a, b)).add(xa, xb)
            pooled.add(xa, xb)
    if not pairs:
        return []
    rows = [pairs[k].row() for k in sorted(pairs)]
    return rows + [{**pooled.row(), "annotators": "all pairs"}]


def model_agreement(
    rankings: Mapping[str, Mapping[str, dict[str, Any]]], model_scores: Mapping[str, Sequence[float]]
) -> list[dict[str, Any]]:
    """Rows per annotator: the reward model's scores against that person's, on the lists both ranked."""
    per: dict[str, PairStats] = {}
    for item, by in rankings.items():
        scores = model_scores.get(item)
        if scores is None:
            continue
        for who, (_, x) in _views(by).items():
            if len(x) == len(scores):
                per.setdefault(who, PairStats(MODEL, who)).add(list(scores), x)
    return [per[k].row() for k in sorted(per)]


def consensus(by_annotator: Mapping[str, dict[str, Any]]) -> list[float] | None:
    """Mean score per answer over the people who ranked an item (None if nobody did)."""
    views = [x for _, x in _views(by_annotator).values()]
    if not views or len({len(x) for x in views}) != 1:
        return None
    return [sum(col) / len(views) for col in zip(*views)]
