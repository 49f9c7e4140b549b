"""Evaluation statistics against brute-force loops and the libraries that define them, on random lists with
ties in labels, rewards and lengths, and variable K (padding)."""

from __future__ import annotations

import itertools
import math
import random
import warnings

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import brier_score_loss, log_loss
from torchmetrics.functional.classification import binary_calibration_error

from rankrm.evaluation import bootstrap, calibration
from rankrm.evaluation.results import compute_results
from rankrm.evaluation.stats import Columns, Lists, breakdown, pairs_of, spearman_per_list
from rankrm.metrics import ranking_metrics
from rankrm.tie_metrics import tie_ratios, tie_sums


def random_lists(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(2, 6)
        labels = [float(rng.randint(0, 3)) for _ in range(k)]
        rewards = [round(lab + rng.gauss(0, 1.5), 1) for lab in labels]  # rounding makes reward ties
        lengths = [rng.choice([5, 10, 10, 20, 40]) for _ in range(k)]  # length ties too
        out.append({"labels": labels, "rewards": rewards, "lengths": lengths, "group": f"g{i % 3}"})
    return out


def as_lists(rows: list[dict]) -> Lists:
    return Lists.build([r["rewards"] for r in rows], [r["labels"] for r in rows], [r["lengths"] for r in rows])


def brute_pairs(rows: list[dict]) -> list[tuple[int, float, float, int]]:
    """(list, r_better - r_worse, label gap, sign(len_better - len_worse)) of every valid pair, by a plain loop."""
    out = []
    for b, r in enumerate(rows):
        for i, j in itertools.permutations(range(len(r["labels"])), 2):
            if r["labels"][i] > r["labels"][j]:
                d_len = r["lengths"][i] - r["lengths"][j]
                out.append(
                    (b, r["rewards"][i] - r["rewards"][j], r["labels"][i] - r["labels"][j], (d_len > 0) - (d_len < 0))
                )
    return out


def records(rows: list[dict], spec: str = "s", role: str = "eval") -> list[dict]:
    return [
        {
            "spec": spec,
            "kind": "lists",
            "role": role,
            "split": "test" if role == "eval" else "val",
            "index": i,
            "id": i,
            "subset": None,
            **r,
        }
        for i, r in enumerate(rows)
    ]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_spearman_per_list_matches_scipy(seed: int) -> None:
    rows = random_lists(150, seed)
    got = spearman_per_list(as_lists(rows))
    for g, r in zip(got, rows):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # scipy warns on a constant input (rho undefined: NaN)
            expect = spearmanr(r["rewards"], r["lengths"]).statistic
        assert (math.isnan(g) and math.isnan(expect)) or g == pytest.approx(expect, abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_pairs_and_length_split_match_a_loop(seed: int) -> None:
    rows = random_lists(120, seed)
    pairs = pairs_of(as_lists(rows))
    expect = brute_pairs(rows)
    got = zip(pairs.list_index.tolist(), pairs.diff.tolist(), pairs.gap.tolist(), pairs.longer.tolist())
    assert sorted((b, round(d, 9), g, s) for b, d, g, s in got) == sorted(
        (b, round(d, 9), g, s) for b, d, g, s in expect
    )
    entry = compute_results(records(rows), {"bootstrap": 10})["s"]
    lb = entry["length_bias"]
    for sign, key in ((1, "better_longer"), (-1, "better_shorter"), (0, "same_length")):
        sel = [p for p in expect if p[3] == sign]
        assert lb[f"n_pairs_{key}"] == len(sel)
        assert lb[f"acc_{key}"] == pytest.approx(sum(p[1] > 0 for p in sel) / len(sel))
    assert lb["longer_wins_acc"] == pytest.approx(sum(p[3] == 1 for p in expect) / len(expect))
    assert entry["metrics"]["n_reward_ties"] == sum(p[1] == 0 for p in expect)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rho = [spearmanr(r["rewards"], r["lengths"]).statistic for r in rows]
    assert lb["spearman_mean"] == pytest.approx(np.nanmean(rho))


def test_ranking_metrics_are_the_training_metrics() -> None:
    rows = random_lists(200, 4)
    lists = as_lists(rows)
    t = [torch.as_tensor(a) for a in (lists.rewards, lists.labels, lists.mask)]
    # main's tie metrics (tie_auc, ...) are not in an evaluation yet
    ties = set(tie_ratios(tie_sums(*t, None, None), False))
    assert ties, "the lists hold tied pairs"
    expect = {k: v.item() for k, v in ranking_metrics(*t).items() if k not in ties}
    got = compute_results(records(rows), {"bootstrap": 10})["s"]["metrics"]
    for k, v in expect.items():
        assert got[k] == pytest.approx(v, abs=1e-6), k


def test_gap_and_rank_breakdowns_match_a_loop() -> None:
    rows = random_lists(150, 5)
    out = breakdown(pairs_of(as_lists(rows)))
    expect_gap: dict[str, list[bool]] = {}
    expect_rank: dict[str, list[bool]] = {"top": [], "bottom": []}
    for r in rows:
        levels = sorted(set(r["labels"]), reverse=True)  # level p (1-based) = p-th best distinct label
        for i, j in itertools.permutations(range(len(r["labels"])), 2):
            li, lj = r["labels"][i], r["labels"][j]
            if li <= lj:
                continue
            right = r["rewards"][i] > r["rewards"][j]
            expect_gap.setdefault(f"{li - lj:g}", []).append(right)
            p, q = levels.index(li) + 1, levels.index(lj) + 1
            if q == p + 1:
                expect_rank.setdefault(f"{p}-{q}", []).append(right)
                expect_rank["top"] += [right] if p == 1 else []
                expect_rank["bottom"] += [right] if q == len(levels) else []
    for got, expect in ((out["by_gap"], expect_gap), (out["by_rank"], expect_rank)):
        assert set(got) == set(expect)
        for k, v in expect.items():
            assert got[k]["pairs"] == len(v) and got[k]["acc"] == pytest.approx(np.mean(v)), k


def test_continuous_gaps_go_to_quintile_bins() -> None:
    rows = [
        {"labels": [random.Random(i).random() * 4, 0.0], "rewards": [1.0, 0.0], "lengths": [1, 2]} for i in range(50)
    ]
    by_gap = breakdown(pairs_of(as_lists(rows)))["by_gap"]
    assert len(by_gap) == 5 and sum(c["pairs"] for c in by_gap.values()) == 50


def _symmetric(diff: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    p = 1 / (1 + np.exp(-diff / t))
    return np.concatenate([p, 1 - p]), np.concatenate([np.ones_like(p), np.zeros_like(p)])


@pytest.mark.parametrize("t", [1.0, 0.37])
def test_calibration_sums_match_sklearn_and_torchmetrics(t: float) -> None:
    rows = random_lists(200, 6)
    pairs = pairs_of(as_lists(rows))
    cols = Columns(len(rows))
    calibration.add_columns(cols, pairs, t, "x", bins=10)
    tot = {k: cols.matrix[:, i].sum() for k, i in cols.names.items()}
    got = calibration.headlines(tot, "x", 10, np.float64(len(pairs.diff)))
    p, y = _symmetric(pairs.diff, t)
    assert got["nll_x"] == pytest.approx(log_loss(y, p), rel=1e-9)
    assert got["brier_x"] == pytest.approx(brier_score_loss(y, p), rel=1e-9)
    ece = binary_calibration_error(torch.as_tensor(p), torch.as_tensor(y).long(), n_bins=10).item()
    assert got["ece_x"] == pytest.approx(ece, abs=1e-9)


@pytest.mark.parametrize("bins", [2, 10, 16])
def test_ece_matches_a_plain_loop(bins: int) -> None:
    """ECE by hand: every pair in both orders, binned by P into `bins` equal-width bins (P = 1 on its own, as
    torchmetrics does), |sum of P - sum of outcomes| per bin, over the number of predictions."""
    rows = random_lists(150, 11)
    pairs = pairs_of(as_lists(rows))
    cols = Columns(len(rows))
    calibration.add_columns(cols, pairs, 0.8, "x", bins=bins)
    tot = {k: cols.matrix[:, i].sum() for k, i in cols.names.items()}
    got = calibration.headlines(tot, "x", bins, np.float64(len(pairs.diff)))["ece_x"]
    conf: dict[int, float] = {}
    hits: dict[int, float] = {}
    n = 0
    for r in rows:
        for i, j in itertools.permutations(range(len(r["labels"])), 2):
            if r["labels"][i] == r["labels"][j]:
                continue
            p = 1 / (1 + math.exp(-(r["rewards"][i] - r["rewards"][j]) / 0.8))  # P(i beats j)
            b = min(math.floor(p * bins), bins)
            conf[b] = conf.get(b, 0.0) + p
            hits[b] = hits.get(b, 0.0) + (r["labels"][i] > r["labels"][j])
            n += 1
    assert got == pytest.approx(sum(abs(conf[b] - hits[b]) for b in conf) / n, abs=1e-12)


def test_temperature_is_sklearns_one_feature_logistic_regression() -> None:
    diff = pairs_of(as_lists(random_lists(300, 7))).diff
    t = calibration.fit_temperature(diff)
    x = np.concatenate([diff, -diff])[:, None]
    y = np.concatenate([np.ones_like(diff), np.zeros_like(diff)])
    w = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-10, max_iter=1000).fit(x, y).coef_[0, 0]
    assert 1 / t == pytest.approx(w, rel=1e-3)
    assert calibration.nll(diff, t) <= calibration.nll(diff, 1.0)


def test_odd_bin_counts_are_refused() -> None:
    from rankrm.errors import RankrmError

    with pytest.raises(RankrmError, match="even"):
        compute_results(records(random_lists(5, 0)), {"bins": 15})


def test_bootstrap_weights_equal_rebuilding_the_resampled_lists() -> None:
    rows = random_lists(40, 8)
    lists = as_lists(rows)
    cols = Columns(len(rows))
    pairs = pairs_of(lists)
    cols.add_pairs("pairs", pairs, np.ones_like(pairs.diff))
    cols.add_pairs("correct", pairs, pairs.correct)
    clusters, strata = np.arange(len(rows)), np.zeros(len(rows), int)
    (w,) = list(bootstrap.weight_chunks(clusters, strata, n_boot=25, seed=3))
    assert (w.sum(1) == len(rows)).all()  # n draws with replacement per replicate
    fast = (w @ cols.matrix)[:, 1] / (w @ cols.matrix)[:, 0]
    for b in range(25):
        resampled = [r for r, k in zip(rows, w[b].astype(int)) for _ in range(k)]
        rl = as_lists(resampled)
        t = [torch.as_tensor(a) for a in (rl.rewards, rl.labels, rl.mask)]
        assert fast[b] == pytest.approx(ranking_metrics(*t)["pair_acc"].item())


def test_bootstrap_keeps_strata_sizes_and_clusters_together() -> None:
    clusters = np.array([0, 0, 1, 2, 3, 3, 4])
    strata = np.array([0, 0, 0, 1, 1, 1, 1])
    for w in bootstrap.weight_chunks(clusters, strata, n_boot=50, seed=0, max_cells=70):
        assert (w[:, 0] == w[:, 1]).all() and (w[:, 4] == w[:, 5]).all()  # a cluster's lists share a weight
        assert (w[:, [0, 2]].sum(1) == 2).all() and (w[:, [3, 4, 6]].sum(1) == 3).all()  # clusters per stratum


def test_results_are_seeded_and_intervals_bracket_the_values() -> None:
    recs = records(random_lists(120, 9)) + records(random_lists(60, 10), role="fit")
    a = compute_results(recs, {"bootstrap": 100, "seed": 1})
    assert a == compute_results(recs, {"bootstrap": 100, "seed": 1})
    e = a["s"]
    assert e["calibration"]["fit_on"].startswith("val split (60 lists)")
    for section in ("metrics", "length_bias", "calibration"):
        for k, (lo, hi) in e[section]["ci95"].items():
            assert lo <= e[section][k] <= hi, (section, k)
    assert compute_results(recs, {"bootstrap": 100, "seed": 2})["s"]["metrics"]["ci95"] != e["metrics"]["ci95"]
