"""`scores.jsonl` records -> `results.json`: every number of an evaluation, from the rewards alone.

A record is one list (one RewardBench row) of one data spec:
  {"spec", "kind": "lists" | "rewardbench" | "rewardbench2", "role": "eval" | "fit", "split",
   "index", "id", "group", "subset", "labels", "rewards", "lengths"}
`role: fit` lists only fit the calibration temperature (the val split); `eval` lists are evaluated.
`compute_results(records, settings)` is what the runner calls, so results.json is always
reproducible from scores.jsonl (a test does it). Time and memory grow linearly with the lists
(pairs: K^2 per list), times `bootstrap` for the intervals.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from rankrm.evaluation import bootstrap, calibration, rewardbench
from rankrm.evaluation.stats import (
    Columns,
    Lists,
    breakdown,
    length_columns,
    length_headlines,
    pairs_of,
    ranking_columns,
    ranking_headlines,
    ratio,
)

DEFAULTS = {"bootstrap": 1000, "seed": 0, "bins": 10, "cutoffs": [1, 3]}
SECTIONS = ("metrics", "length_bias", "calibration", "rewardbench")


def _lists(recs: Sequence[Mapping[str, Any]]) -> Lists:
    return Lists.build([r["rewards"] for r in recs], [r["labels"] for r in recs], [r["lengths"] for r in recs])


class _SetStats:
    """The per-list columns of one spec's eval lists and how to turn column totals into headlines."""

    def __init__(self, recs: Sequence[Mapping[str, Any]], fit_recs: Sequence[Mapping[str, Any]], settings: dict):
        self.recs, self.kind, self.bins = recs, recs[0]["kind"], int(settings["bins"])
        self.lists = _lists(recs)
        self.pairs = pairs_of(self.lists)
        self.cols = Columns(self.lists.n)
        self.rank_keys = ranking_columns(self.cols, self.lists, settings["cutoffs"])
        length_columns(self.cols, self.lists, self.pairs)
        fit_pairs = pairs_of(_lists(fit_recs)) if fit_recs else self.pairs
        self.temperature = calibration.fit_temperature(fit_pairs.diff)
        self.fit_pairs = len(fit_pairs.diff)
        calibration.add_columns(self.cols, self.pairs, 1.0, "before", self.bins)
        calibration.add_columns(self.cols, self.pairs, self.temperature, "after", self.bins)
        self.subsets = [r.get("subset") for r in recs]
        if self.kind in rewardbench.KINDS:
            self._rewardbench_columns()

    def _rewardbench_columns(self) -> None:
        credit = rewardbench.v1_correct if self.kind == "rewardbench" else rewardbench.v2_credit
        values = np.array([credit(r["rewards"]) for r in self.recs])
        for s in dict.fromkeys(self.subsets):
            sel = np.array([x == s for x in self.subsets], dtype=float)
            self.cols.add(f"rb/n/{s}", sel)
            self.cols.add(f"rb/sum/{s}", sel * values)
        self.ties = [
            (*rewardbench.ties_key(r["id"]), r["rewards"], int(sum(x == 1.0 for x in r["labels"])))
            for r in self.recs
            if r.get("subset") == rewardbench.TIES
        ]
        self.ties_rows = np.array([s == rewardbench.TIES for s in self.subsets])

    def clusters(self) -> tuple[np.ndarray, np.ndarray]:
        """Resampling units: lists, except a Ties prompt's rows (one cluster); strata: RewardBench subsets."""
        ids = [
            f"ties:{rewardbench.ties_key(r['id'])[1]}" if s == rewardbench.TIES else str(i)
            for i, (r, s) in enumerate(zip(self.recs, self.subsets))
        ]
        strata = [s or "" for s in self.subsets] if self.kind in rewardbench.KINDS else [""] * len(ids)
        return np.unique(ids, return_inverse=True)[1], np.unique(strata, return_inverse=True)[1]

    def headlines(self, t: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        """Flat {"section/name": value} from column totals; `weights` (c, n) feed the non-additive Ties score."""
        out = {f"metrics/{k}": v for k, v in ranking_headlines(t, self.rank_keys).items()}
        out.update({f"length_bias/{k}": v for k, v in length_headlines(t).items()})
        for tag in ("before", "after"):
            cal = calibration.headlines(t, tag, self.bins, t["rank/n_pairs"])
            out.update({f"calibration/{k}": v for k, v in cal.items()})
        if self.kind in rewardbench.KINDS:
            out.update(self._rewardbench(t, weights))
        return out

    def _rewardbench(self, t: dict[str, np.ndarray], weights: np.ndarray) -> dict[str, np.ndarray]:
        scores = {s: ratio(t[f"rb/sum/{s}"], t[f"rb/n/{s}"]) for s in dict.fromkeys(self.subsets)}
        if rewardbench.TIES in scores:  # its composite replaces the mean credit (run_v2.py)
            w = np.atleast_2d(weights)[:, self.ties_rows]
            scores[rewardbench.TIES] = np.array([rewardbench.ties_score(self.ties, row) for row in w]).squeeze()
        summary = rewardbench.sections_v1(scores) if self.kind == "rewardbench" else rewardbench.sections_v2(scores)
        out = {f"rewardbench/subsets/{s}": v for s, v in scores.items()}
        out.update({f"rewardbench/sections/{s}": v for s, v in summary["sections"].items()})
        out["rewardbench/score"] = summary["score"]
        return out

    def by_group(self) -> dict[str, dict[str, float]]:
        """Pair accuracy and length bias per source file / domain (lists' `group`; RewardBench: subset)."""
        groups = [r.get("subset") or r.get("group") or "" for r in self.recs]
        out = {}
        matrix = self.cols.matrix
        for g in sorted(set(groups)):
            rows = np.array([x == g for x in groups])
            t = {k: matrix[rows, i].sum() for k, i in self.cols.names.items()}
            rank, length = ranking_headlines(t, self.rank_keys), length_headlines(t)
            out[g] = {
                "lists": int(rows.sum()),
                "pairs": int(rank["n_pairs"]),
                "pair_acc": float(rank["pair_acc"]),
                "spearman_mean": float(length["spearman_mean"]),
                "longer_wins_acc": float(length["longer_wins_acc"]),
            }
        return out


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a/b/c": v} -> {"a": {"b": {"c": v}}}."""
    out: dict[str, Any] = {}
    for key, v in flat.items():
        *path, last = key.split("/")
        node = out
        for p in path:
            node = node.setdefault(p, {})
        node[last] = v
    return out


def _plain(key: str, x: Any) -> Any:
    """numpy scalars -> Python numbers (counts `n_*` -> int); NaN (an empty ratio) -> None, as JSON writes it."""
    x = x.item() if hasattr(x, "item") else x
    if isinstance(x, float) and math.isnan(x):
        return None
    return int(round(x)) if key.rsplit("/", 1)[-1].startswith("n_") else x


def compute_set(recs: Sequence[Mapping[str, Any]], fit_recs: Sequence[Mapping[str, Any]], settings: dict) -> dict:
    """The results.json entry of one spec (`recs`: its eval records, `fit_recs`: its fit records)."""
    s = _SetStats(recs, fit_recs, settings)
    matrix = s.cols.matrix
    t = {k: matrix[:, i].sum() for k, i in s.cols.names.items()}
    flat = {k: _plain(k, v) for k, v in s.headlines(t, np.ones(len(recs))).items()}
    clusters, strata = s.clusters()
    ci = bootstrap.intervals(
        matrix, s.cols.names, s.headlines, clusters, strata, settings["bootstrap"], settings["seed"]
    )
    entry = _nest(flat)
    for section in SECTIONS:
        if section in entry:
            inner = {k.split("/", 1)[1]: v for k, v in ci.items() if k.startswith(section + "/")}
            entry[section]["ci95"] = _nest({k: v for k, v in inner.items() if not k.startswith("n_")})  # no counts
    cal = entry["calibration"]
    cal.update(temperature=s.temperature, fit_pairs=s.fit_pairs, fit_on=_fit_on(recs, fit_recs))
    cal["reliability"] = {tag: calibration.reliability(t, tag, s.bins) for tag in ("before", "after")}
    if "rewardbench" in entry:
        summary = entry["rewardbench"]
        summary["sections_missing"] = [x for x in _sections(s.kind) if x not in summary.get("sections", {})]
    entry.update(breakdown(s.pairs))
    entry["by_group"] = s.by_group()
    entry.update(kind=s.kind, split=recs[0]["split"], settings=dict(settings))
    return entry


def _sections(kind: str) -> Sequence[str]:
    return list(rewardbench.SUBSET_MAPPING) if kind == "rewardbench" else list(rewardbench.V2_SUBSETS)


def _fit_on(recs: Sequence[Mapping[str, Any]], fit_recs: Sequence[Mapping[str, Any]]) -> str:
    if fit_recs:
        return f"{fit_recs[0]['split']} split ({len(fit_recs)} lists)"
    return f"the evaluated lists themselves ({len(recs)} lists; no val split: in-sample)"


def compute_results(records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any] | None = None) -> dict:
    """{spec: entry} for every spec in `records`, in the order the specs first appear."""
    settings = {**DEFAULTS, **(settings or {})}
    calibration.check_bins(settings["bins"])
    by_spec: dict[str, dict[str, list]] = {}
    for r in records:
        by_spec.setdefault(r["spec"], {"eval": [], "fit": []})[r["role"]].append(r)
    return {spec: compute_set(parts["eval"], parts["fit"], settings) for spec, parts in by_spec.items()}
