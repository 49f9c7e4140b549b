"""rankrm.metrics against loop references, SciPy's kendalltau and sklearn's ndcg_score."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref
import torch
from scipy.stats import kendalltau
from sklearn.metrics import ndcg_score

from rankrm import metrics as M
from rankrm.errors import RankrmError
from rankrm.losses.ties import davidson_logprobs, rao_kupper_logprobs

SEEDS = range(12)
KEYS = ["pair_acc", "kendall_tau", "ndcg", "ndcg@1", "ndcg@3", "top1_acc", "exact_order", "n_lists", "n_pairs"]
TIE_KEYS = ["tie_auc", "outcome_acc", "n_tied_pairs"]  # only on batches with tied labels

FUNCTIONAL = [
    ("pair_accuracy", M.pair_accuracy, ref.ref_pair_accuracy),
    ("kendall_tau", M.kendall_tau, ref.ref_kendall_tau),
    ("ndcg", M.ndcg, ref.ref_ndcg),
    ("ndcg@1", lambda *a: M.ndcg_at(*a, 1), lambda *a: ref.ref_ndcg(*a, k=1)),
    ("ndcg@3", lambda *a: M.ndcg_at(*a, 3), lambda *a: ref.ref_ndcg(*a, k=3)),
    ("top1_accuracy", M.top1_accuracy, ref.ref_top1),
    ("exact_order", M.exact_order, ref.ref_exact_order),
]


def _eligible_lists(rewards, labels, mask):
    return [(np.array(r), np.array(l)) for r, l in ref.real_lists(rewards, labels, mask) if len(set(l)) > 1]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, fn, reference", FUNCTIONAL, ids=[f[0] for f in FUNCTIONAL])
def test_functional_metric_matches_loop_reference(name, fn, reference, seed):
    rewards, labels, mask = ref.random_batch(seed)
    assert fn(rewards, labels, mask).item() == pytest.approx(reference(rewards, labels, mask), abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
def test_kendall_tau_matches_scipy_tau_b(seed):
    rewards, labels, mask = ref.random_batch(seed)
    taus = [kendalltau(r, l, variant="b").statistic for r, l in _eligible_lists(rewards, labels, mask)]
    expected = np.mean(np.nan_to_num(taus, nan=0.0)) if taus else 0.0  # scipy: NaN for all-tied rewards
    assert M.kendall_tau(rewards, labels, mask).item() == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("k", [None, 1, 3])
def test_ndcg_matches_sklearn_including_reward_ties(seed, k):
    rewards, labels, mask = ref.random_batch(seed)
    per_list = [ndcg_score([l - l.min()], [r], k=k) for r, l in _eligible_lists(rewards, labels, mask)]
    expected = np.mean(per_list) if per_list else 0.0
    assert M.ndcg_at(rewards, labels, mask, k).item() == pytest.approx(expected, abs=1e-6)


def test_all_tied_rewards_give_tau_zero_chance_level_top1_and_zero_exact_order():
    rewards, labels, mask = torch.zeros(1, 3), torch.tensor([[2.0, 1.0, 0.0]]), torch.ones(1, 3, dtype=torch.bool)
    out = M.ranking_metrics(rewards, labels, mask)
    assert out["kendall_tau"] == 0 and out["pair_acc"] == 0 and out["exact_order"] == 0
    assert out["top1_acc"].item() == pytest.approx(1 / 3)
    assert out["ndcg@1"].item() == pytest.approx((2 + 1 + 0) / 3 / 2)  # mean gain at position 0 / ideal


def test_perfect_ranking_scores_one_everywhere():
    labels = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 1.0, 1.0, 5.0]])
    mask = torch.tensor([[True] * 4, [True, True, False, True]])
    out = M.ranking_metrics(labels.clone(), labels, mask)
    assert all(out[k] == 1 for k in KEYS[:7]) and out["n_lists"] == 2 and out["n_pairs"] == 6 + 3


@pytest.mark.parametrize("seed", SEEDS)
def test_padding_garbage_and_item_order_change_no_metric(seed):
    rewards, labels, mask = ref.random_batch(seed)
    base = M.ranking_metrics(rewards.where(mask, 0.0), labels.where(mask, 0.0), mask)
    perm = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed)).argsort(dim=-1)
    for batch in [(rewards, labels, mask), [t.gather(1, perm) for t in (rewards, labels, mask)]]:
        out = M.ranking_metrics(*batch)
        assert list(out) == KEYS + (TIE_KEYS if "n_tied_pairs" in base else [])
        for key in out:
            assert out[key].item() == pytest.approx(base[key].item(), abs=1e-6), key


def test_nothing_eligible_gives_zeros_not_nan():
    out = M.ranking_metrics(torch.randn(2, 3), torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool))
    assert out.pop("n_tied_pairs") == 6 and all(v.item() == 0 for v in out.values())  # ties only: every call wrong


def _concat(batches):
    """Concatenate batches of different K by padding with garbage."""
    k = max(b[0].shape[1] for b in batches)
    pad = lambda t, v: torch.nn.functional.pad(t, (0, k - t.shape[1]), value=v)  # noqa: E731
    return [torch.cat([pad(b[n], v) for b in batches]) for n, v in ((0, math.nan), (1, math.nan), (2, False))]


@pytest.mark.parametrize("seed", range(4))
def test_epoch_accumulation_equals_metric_on_concatenated_data(seed):
    batches = [ref.random_batch(seed * 3 + n, dtype=torch.float32) for n in range(3)]
    metric = M.RankingMetrics(cutoffs=(1, 3))
    for batch in batches:
        metric.update(*batch)
    epoch = metric.compute()
    whole = M.ranking_metrics(*_concat(batches))
    assert list(epoch) == list(whole) and list(whole)[: len(KEYS)] == KEYS
    for key in whole:  # the tie metrics too, where the batches hold ties
        assert epoch[key].item() == pytest.approx(whole[key].item(), abs=1e-6), key
    metric.reset()
    metric.update(*batches[0])
    assert metric.compute()["n_pairs"] == M.ranking_metrics(*batches[0])["n_pairs"]


def test_epoch_pooling_differs_from_mean_of_batch_values():
    # Batch 1: one K=2 list, ordered right (1 of 1 pair). Batch 2: one K=4 list, all 6 pairs wrong.
    b1 = (torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool))
    b2 = (
        torch.tensor([[0.0, 1.0, 2.0, 3.0]]),
        torch.tensor([[3.0, 2.0, 1.0, 0.0]]),
        torch.ones(1, 4, dtype=torch.bool),
    )
    metric = M.RankingMetrics()
    metric.update(*b1)
    metric.update(*b2)
    pooled = metric.compute()["pair_acc"].item()
    batch_mean = (M.pair_accuracy(*b1) + M.pair_accuracy(*b2)).item() / 2
    assert pooled == pytest.approx(1 / 7) and batch_mean == pytest.approx(0.5)


def test_ddp_style_merge_of_two_processes_equals_single_process():
    batches = [ref.random_batch(n, dtype=torch.float32) for n in (20, 21, 22, 23)]
    rank0, rank1, single = (M.RankingMetrics(cutoffs=(2,)) for _ in range(3))
    for n, batch in enumerate(batches):
        (rank0 if n % 2 else rank1).update(*batch)
        single.update(*batch)
    rank0.merge_state(rank1)  # applies each state's dist_reduce_fx, as the DDP sync does
    merged, expected = rank0.compute(), single.compute()
    assert list(merged) == [k.replace("ndcg@1", "ndcg@2") for k in KEYS if k != "ndcg@3"] + TIE_KEYS
    for key in merged:
        assert merged[key].item() == pytest.approx(expected[key].item(), abs=1e-6), key


def test_metric_accepts_rewards_with_grad_and_keeps_no_graph():
    rewards, labels, mask = ref.random_batch(1, dtype=torch.float32)
    metric = M.RankingMetrics()
    rewards.requires_grad_(True)
    metric.update(rewards, labels, mask)
    assert not any(v.requires_grad for v in metric.compute().values())
    assert not any(v.requires_grad for v in M.ranking_metrics(rewards, labels, mask).values())


@pytest.mark.parametrize("cutoffs", [(0,), (3, 3)])
def test_bad_cutoffs_raise_user_error(cutoffs):
    with pytest.raises(RankrmError):
        M.RankingMetrics(cutoffs=cutoffs)


TIE_MODELS = [
    (None, None, None),
    (davidson_logprobs, ref.davidson_probs, 0.7),
    (rao_kupper_logprobs, ref.rao_kupper_probs, 0.9),
]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("outcome, probs, tie", TIE_MODELS, ids=["no-tie-model", "davidson", "rao_kupper"])
def test_tie_metrics_match_loop_reference(seed, outcome, probs, tie):
    rewards, labels, mask = ref.random_batch(seed)
    out = M.ranking_metrics(rewards, labels, mask, outcome=outcome, tie=tie)
    if "n_tied_pairs" not in out:  # no tied pair in this batch
        assert not any(ref.tied_pairs_of(lab) for _, lab in ref.real_lists(rewards, labels, mask))
        return
    expected = ref.ref_tie_metrics(rewards, labels, mask, probs, tie)
    assert set(out) - set(KEYS) == set(expected) | {"n_tied_pairs"}
    for key, value in expected.items():
        assert out[key].item() == pytest.approx(value, abs=1e-6), key
    assert out["n_tied_pairs"] == sum(len(ref.tied_pairs_of(lab)) for _, lab in ref.real_lists(rewards, labels, mask))


def test_tie_metrics_by_hand():
    # One list: 0 ~ 1 tied (gap 0.1), both above 2 (gaps 1.0, 1.1): the tie's gap is the smallest.
    rewards, labels = torch.tensor([[1.0, 1.1, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    plain = M.ranking_metrics(rewards, labels, mask)
    assert plain["tie_auc"] == 1 and plain["outcome_acc"].item() == pytest.approx(2 / 3)  # never calls the tie
    # Davidson calls a tie when nu > e^(|d|/2): nu = 1.3 does at gap 0.1, not at gaps >= 1.
    tie_model = M.ranking_metrics(rewards, labels, mask, outcome=davidson_logprobs, tie=1.3)
    assert tie_model["outcome_acc"] == 1
