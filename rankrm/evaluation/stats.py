"""Per-list statistics of one scored data set, as additive columns: every headline number is a ratio
of column sums, so the bootstrap (`bootstrap.py`) re-weights lists instead of re-running anything.

Conventions (one home, here):
- A pair is (better, worse) within one list with labels strictly apart; tied labels make no pair.
  A pair is right iff r_better > r_worse strictly (a reward tie is wrong), as in `rankrm.metrics`.
- Response length is its character count (model-free, so it is the same for every model).
- Length bias: Spearman correlation of reward and length within each list (lists where either is
  constant have none and are counted out), averaged over lists; pair accuracy split by whether the
  better response is the longer one, the shorter one or neither; and the "longer wins" baseline:
  the share of pairs whose longer response is the better one (equal lengths count as wrong, as a
  reward tie does).
- Rank position: labels grouped into levels (distinct values, best = level 1); the pair of levels
  (p, p+1) is "p-(p+1)"; `top` is levels 1-2, `bottom` the last two levels of each list.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import rankdata

from rankrm.metrics import per_list_metrics


@dataclass(frozen=True)
class Lists:
    """n lists padded to K slots (real responses first): float64 rewards, labels, lengths and a bool mask."""

    rewards: np.ndarray  # (n, K)
    labels: np.ndarray  # (n, K)
    lengths: np.ndarray  # (n, K)
    mask: np.ndarray  # (n, K) bool

    @classmethod
    def build(
        cls, rewards: Sequence[Sequence[float]], labels: Sequence[Sequence[float]], lengths: Sequence[Sequence[int]]
    ) -> Lists:
        n, k = len(rewards), max((len(r) for r in rewards), default=1)
        arrays = [np.zeros((n, k)) for _ in range(3)]
        mask = np.zeros((n, k), dtype=bool)
        for b, row in enumerate(zip(rewards, labels, lengths)):
            for arr, values in zip(arrays, row):
                arr[b, : len(values)] = values
            mask[b, : len(row[0])] = True
        return cls(*arrays, mask)

    @property
    def n(self) -> int:
        return len(self.mask)


@dataclass(frozen=True)
class Pairs:
    """Every valid pair, (P,) arrays: its list, reward difference, label gap, length order, label levels."""

    list_index: np.ndarray  # (P,) int
    diff: np.ndarray  # r_better - r_worse
    gap: np.ndarray  # label_better - label_worse > 0
    longer: np.ndarray  # sign(len_better - len_worse): 1 better is longer, -1 shorter, 0 same
    level: np.ndarray  # label level of the better response (1 = the list's best)
    adjacent: np.ndarray  # bool: the worse response is on the next level
    bottom: np.ndarray  # bool: adjacent and on the list's last two levels

    @property
    def correct(self) -> np.ndarray:
        return self.diff > 0


def _levels(lists: Lists) -> tuple[np.ndarray, np.ndarray]:
    """Label level of each slot (1 = best distinct label), (n, K), and levels per list, (n,)."""
    lab = np.where(lists.mask, lists.labels, -np.inf)
    above = lab[:, None, :] > lab[:, :, None]  # (n, K, K): [b, i, k] label k is above label i
    # distinct values above i: count each k only once per value (k is the first slot holding it)
    first = ~np.triu(lab[:, :, None] == lab[:, None, :], k=1).any(axis=1)  # (n, K): slot k is its value's first
    level = 1 + (above & first[:, None, :]).sum(-1)  # (n, K)
    n_levels = (first & lists.mask).sum(-1)  # (n,)
    return level, n_levels


def pairs_of(lists: Lists) -> Pairs:
    m = lists.mask
    valid = m[:, :, None] & m[:, None, :] & (lists.labels[:, :, None] > lists.labels[:, None, :])  # (n, K, K)
    b, i, j = np.nonzero(valid)  # better i, worse j of list b
    level, n_levels = _levels(lists)
    adjacent = level[b, j] == level[b, i] + 1
    return Pairs(
        list_index=b,
        diff=lists.rewards[b, i] - lists.rewards[b, j],
        gap=lists.labels[b, i] - lists.labels[b, j],
        longer=np.sign(lists.lengths[b, i] - lists.lengths[b, j]).astype(int),
        level=level[b, i],
        adjacent=adjacent,
        bottom=adjacent & (level[b, j] == n_levels[b]),
    )


def spearman_per_list(lists: Lists) -> np.ndarray:
    """Spearman rho of reward vs length in each list, (n,); NaN where either is constant or K < 2.

    Lists of equal K are ranked together (scipy's average ranks for ties) and correlated row-wise;
    one `scipy.stats.spearmanr` call per list gives the same numbers (tested) but costs a Python call
    per list, and spearmanr's axis argument correlates columns with each other, not row pairs.
    """
    out = np.full(lists.n, np.nan)
    k_of = lists.mask.sum(-1)
    for k in np.unique(k_of):
        rows = np.nonzero(k_of == k)[0]
        if k < 2:
            continue
        rr = rankdata(lists.rewards[rows, :k], axis=1)  # (m, k)
        rl = rankdata(lists.lengths[rows, :k], axis=1)
        rr, rl = rr - rr.mean(1, keepdims=True), rl - rl.mean(1, keepdims=True)
        denom = np.sqrt((rr**2).sum(1) * (rl**2).sum(1))
        with np.errstate(divide="ignore", invalid="ignore"):
            out[rows] = np.where(denom > 0, (rr * rl).sum(1) / denom, np.nan)
    return out


class Columns:
    """Named per-list columns, (n, C) float64; `sums(weights)` gives the weighted column totals."""

    def __init__(self, n: int) -> None:
        self.n, self.names, self._cols = n, {}, []

    def add(self, name: str, values: np.ndarray) -> None:
        self.names[name] = len(self._cols)
        self._cols.append(np.asarray(values, dtype=float).reshape(self.n))

    def add_pairs(self, name: str, pairs: Pairs, values: np.ndarray) -> None:
        """Per-list sums of a per-pair quantity."""
        self.add(name, np.bincount(pairs.list_index, weights=values, minlength=self.n))

    @property
    def matrix(self) -> np.ndarray:
        return np.stack(self._cols, axis=1) if self._cols else np.zeros((self.n, 0))


def ranking_columns(cols: Columns, lists: Lists, cutoffs: Sequence[int], chunk: int = 4096) -> list[str]:
    """`rankrm.metrics.per_list_metrics` of every list (the training metrics' own definitions)."""
    parts: dict[str, list[np.ndarray]] = {}
    for s in range(0, lists.n, chunk):
        sl = slice(s, s + chunk)
        t = [torch.as_tensor(a[sl]) for a in (lists.rewards, lists.labels)]
        for k, v in per_list_metrics(t[0], t[1], torch.as_tensor(lists.mask[sl]), cutoffs).items():
            parts.setdefault(k, []).append(v.double().numpy())
    for k, vs in parts.items():
        cols.add(f"rank/{k}", np.concatenate(vs) if vs else np.zeros(0))
    return [k for k in parts if k not in ("n_pairs", "correct", "eligible")]


def length_columns(cols: Columns, lists: Lists, pairs: Pairs) -> None:
    rho = spearman_per_list(lists)
    cols.add("len/rho_sum", np.nan_to_num(rho))
    cols.add("len/rho_lists", ~np.isnan(rho))
    for name, sign in (("longer", 1), ("shorter", -1), ("same", 0)):
        sel = pairs.longer == sign
        cols.add_pairs(f"len/pairs_{name}", pairs, sel)
        cols.add_pairs(f"len/correct_{name}", pairs, sel & pairs.correct)
    cols.add_pairs("len/reward_ties", pairs, pairs.diff == 0)


def ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den elementwise, NaN where den is 0 (an empty group has no accuracy)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def ranking_headlines(t: dict[str, np.ndarray], keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Training's metric keys from column totals `t` (name -> array of any shape)."""
    out = {"pair_acc": ratio(t["rank/correct"], t["rank/n_pairs"])}
    out.update({k: ratio(t[f"rank/{k}"], t["rank/eligible"]) for k in keys})
    out["n_lists"], out["n_pairs"] = t["rank/eligible"], t["rank/n_pairs"]
    out["n_reward_ties"] = t["len/reward_ties"]  # pairs scored equal (wrong): many hint at low precision
    return out


def length_headlines(t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    total = t["len/pairs_longer"] + t["len/pairs_shorter"] + t["len/pairs_same"]
    out = {"spearman_mean": ratio(t["len/rho_sum"], t["len/rho_lists"]), "n_spearman_lists": t["len/rho_lists"]}
    for name, key in (("longer", "better_longer"), ("shorter", "better_shorter"), ("same", "same_length")):
        out[f"acc_{key}"] = ratio(t[f"len/correct_{name}"], t[f"len/pairs_{name}"])
        out[f"n_pairs_{key}"] = t[f"len/pairs_{name}"]
    out["longer_wins_acc"] = ratio(t["len/pairs_longer"], total)
    return out


def breakdown(pairs: Pairs, max_bins: int = 8) -> dict[str, dict[str, dict[str, float]]]:
    """Pair accuracy by label gap (each value when there are few, else quantile bins) and by rank position."""

    def cell(sel: np.ndarray) -> dict[str, float]:
        n = int(sel.sum())
        return {"acc": float(pairs.correct[sel].mean()) if n else float("nan"), "pairs": n}

    gaps = np.unique(pairs.gap)
    by_gap = {}
    if len(gaps) <= max_bins:
        by_gap = {f"{g:g}": cell(pairs.gap == g) for g in gaps}
    elif len(pairs.gap):
        edges = np.unique(np.quantile(pairs.gap, np.linspace(0, 1, 6)))  # quintiles
        idx = np.clip(np.searchsorted(edges, pairs.gap, side="right") - 1, 0, len(edges) - 2)
        for e in range(len(edges) - 1):
            close = "]" if e == len(edges) - 2 else ")"
            by_gap[f"[{edges[e]:.3g}, {edges[e + 1]:.3g}{close}"] = cell(idx == e)
    by_rank = {
        f"{p}-{p + 1}": cell(pairs.adjacent & (pairs.level == p)) for p in np.unique(pairs.level[pairs.adjacent])
    }
    by_rank["top"] = cell(pairs.adjacent & (pairs.level == 1))
    by_rank["bottom"] = cell(pairs.bottom)
    return {"by_gap": by_gap, "by_rank": by_rank}
