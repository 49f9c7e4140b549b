"""rankrm.losses and rankrm.pairs against slow loop references (tests/reference.py)."""

from __future__ import annotations

import math

import allrank_port as ar
import pytest
import reference as ref
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from rankrm import CONF_DIR
from rankrm.errors import RankrmError
from rankrm.losses import LOSSES, listmle
from rankrm.losses.ties import davidson_logprobs, rao_kupper_logprobs
from rankrm.pairs import pair_index, pair_mask

SEEDS = range(12)
CONF = CONF_DIR / "loss"

# (loss name, kwargs, reference): every kwarg combination checked against the loop reference.
CASES = [
    ("pairwise", {}, ref.ref_pairwise),
    ("pairwise", {"margin": 0.5}, lambda *a: ref.ref_pairwise(*a, margin=0.5)),
    ("pairwise", {"margin": 0.3, "margin_mode": "label_gap"}, lambda *a: ref.ref_pairwise(*a, 0.3, "label_gap")),
    ("ranklist", {}, ref.ref_ranklist),
    ("ranklist", {"margin": 0.5}, lambda *a: ref.ref_ranklist(*a, margin=0.5)),
    ("ranklist", {"margin": 0.3, "margin_mode": "label_gap"}, lambda *a: ref.ref_ranklist(*a, 0.3, "label_gap")),
    ("ranklist_sigmoid", {}, ref.ref_ranklist_sigmoid),
    (
        "ranklist_sigmoid",
        {"margin": 0.2, "margin_mode": "label_gap"},
        lambda *a: ref.ref_ranklist_sigmoid(*a, 0.2, "label_gap"),
    ),
    ("listnet", {}, ref.ref_listnet),
    ("listnet", {"temperature": 0.5}, lambda *a: ref.ref_listnet(*a, temperature=0.5)),
    ("listmle", {}, ref.ref_listmle_breslow),
    ("lambdarank", {}, ref.ref_lambdarank),
    ("lambdarank", {"sigma": 2.0}, lambda *a: ref.ref_lambdarank(*a, sigma=2.0)),
    ("lambdaloss", {}, ref.ref_lambdaloss),
    ("lambdaloss", {"scheme": "ndcg2pp"}, lambda *a: ref.ref_lambdaloss(*a, scheme="ndcg2pp")),
    (
        "lambdaloss",
        {"scheme": "ndcg2pp", "mu": 3.0, "sigma": 2.0, "gain": "exp2"},
        lambda *a: ref.ref_lambdaloss(*a, scheme="ndcg2pp", mu=3.0, sigma=2.0, gain="exp2"),
    ),
    ("approx_ndcg", {}, ref.ref_approx_ndcg),
    ("approx_ndcg", {"alpha": 4.0, "gain": "exp2"}, lambda *a: ref.ref_approx_ndcg(*a, alpha=4.0, gain="exp2")),
    ("neural_ndcg", {}, ref.ref_neural_ndcg),
    (
        "neural_ndcg",
        {"temperature": 0.3, "gain": "exp2", "sinkhorn_iters": 7},
        lambda *a: ref.ref_neural_ndcg(*a, temperature=0.3, gain="exp2", sinkhorn_iters=7),
    ),
    ("regression", {}, ref.ref_regression),
    (
        "regression",
        {"standardize": False, "rmse": True},
        lambda *a: ref.ref_regression(*a, standardize=False, rmse=True),
    ),
    ("hybrid", {}, lambda *a: ref.ref_ranklist(*a) + ref.ref_regression(*a)),
    (
        "hybrid",
        {"ranking": "listnet", "weight": 0.3, "ranking_kwargs": {"temperature": 0.5}},
        lambda *a: ref.ref_listnet(*a, temperature=0.5) + 0.3 * ref.ref_regression(*a),
    ),
    ("bt_ties_davidson", {}, lambda *a: ref.ref_bt_ties(*a, ref.davidson_probs, 1.0)),
    ("bt_ties_davidson", {"tie": 0.2}, lambda *a: ref.ref_bt_ties(*a, ref.davidson_probs, 0.2)),
    ("bt_ties_rao_kupper", {}, lambda *a: ref.ref_bt_ties(*a, ref.rao_kupper_probs, math.log(2.0))),
    ("bt_ties_rao_kupper", {"tie": 1.5}, lambda *a: ref.ref_bt_ties(*a, ref.rao_kupper_probs, 1.5)),
    ("ranklist", {"center_coef": 0.01}, lambda *a: ref.ref_ranklist(*a) + 0.01 * ref.ref_center(*a)),
    ("pairwise", {"l2_coef": 0.5}, lambda *a: ref.ref_pairwise(*a) + 0.5 * ref.ref_l2(*a)),
    (
        "bt_ties_davidson",
        {"center_coef": 0.2, "l2_coef": 0.1, "learn_tie": True, "tie_lr": 0.3},  # learn_*: the module's business
        lambda *a: ref.ref_bt_ties(*a, ref.davidson_probs, 1.0) + 0.2 * ref.ref_center(*a) + 0.1 * ref.ref_l2(*a),
    ),
]
TIE_LOSSES = ("bt_ties_davidson", "bt_ties_rao_kupper")
CASES_BY_ID = [((name, str(kw)), fn) for name, kw, fn in CASES]
CASE_IDS = [f"{name}-{'-'.join(f'{k}={v}' for k, v in kw.items()) or 'default'}" for name, kw, _ in CASES]
LOSS_KWARGS = [(name, kw) for name, kw, _ in CASES]


def _loss_and_grad(name, kwargs, rewards, labels, mask):
    r = rewards.clone().requires_grad_(True)
    loss = LOSSES[name](r, labels, mask, **kwargs)
    loss.backward()
    return loss.detach(), r.grad


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, kwargs, reference", CASES, ids=CASE_IDS)
def test_loss_matches_loop_reference(name, kwargs, reference, seed):
    rewards, labels, mask = ref.random_batch(seed)
    expected = reference(rewards, labels, mask)
    assert LOSSES[name](rewards, labels, mask, **kwargs).item() == pytest.approx(expected, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, kwargs", LOSS_KWARGS, ids=CASE_IDS)
def test_padding_garbage_changes_nothing_and_inputs_stay_untouched(name, kwargs, seed):
    rewards, labels, mask = ref.random_batch(seed)
    copies = [t.clone() for t in (rewards, labels, mask)]
    loss, grad = _loss_and_grad(name, kwargs, rewards, labels, mask)
    clean_loss, clean_grad = _loss_and_grad(name, kwargs, rewards.where(mask, 0.0), labels.where(mask, 0.0), mask)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert loss == clean_loss and torch.equal(grad, clean_grad)
    assert (grad[~mask] == 0).all()
    for before, after in zip(copies, (rewards, labels, mask)):
        torch.testing.assert_close(after, before, rtol=0, atol=0, equal_nan=True)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name, kwargs", LOSS_KWARGS, ids=CASE_IDS)
def test_permuting_items_of_a_list_changes_nothing(name, kwargs, seed):
    rewards, labels, mask = ref.random_batch(seed)
    gen = torch.Generator().manual_seed(seed)
    perm = torch.rand(mask.shape, generator=gen).argsort(dim=-1)  # (B, K): one permutation per list
    shuffled = [t.gather(1, perm) for t in (rewards, labels, mask)]
    loss, grad = _loss_and_grad(name, kwargs, rewards, labels, mask)
    loss_p, grad_p = _loss_and_grad(name, kwargs, *shuffled)
    assert loss_p.item() == pytest.approx(loss.item(), rel=1e-12, abs=1e-12)
    torch.testing.assert_close(grad_p, grad.gather(1, perm))


def test_at_k2_pairwise_equals_ranklist_equals_bradley_terry():
    rewards = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0], [3.0, 1.0], [1.0, 0.0], [0.0, 2.0]], dtype=torch.float64)
    mask = torch.ones(5, 2, dtype=torch.bool)
    winner, loser = labels.argmax(1), labels.argmin(1)
    diff = rewards.gather(1, winner[:, None]) - rewards.gather(1, loser[:, None])
    bradley_terry = -F.logsigmoid(diff).mean()
    torch.testing.assert_close(LOSSES["pairwise"](rewards, labels, mask), bradley_terry)
    torch.testing.assert_close(LOSSES["ranklist"](rewards, labels, mask), bradley_terry)


def test_pooled_pairwise_differs_from_per_list_ranklist_when_pair_counts_differ():
    rewards = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0]])  # list 0: right, list 1: all wrong
    labels = torch.tensor([[1.0, 0.0, 0.0, 0.0], [3.0, 2.0, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    pooled, per_list = LOSSES["pairwise"](rewards, labels, mask), LOSSES["ranklist"](rewards, labels, mask)
    assert pooled.item() == pytest.approx(ref.ref_pairwise(rewards, labels, mask), rel=1e-6)
    assert per_list.item() == pytest.approx(ref.ref_ranklist(rewards, labels, mask), rel=1e-6)
    assert pooled.item() > per_list.item() + 0.1  # pooling lets the 6-pair list dominate


def test_margins_by_hand():
    rewards, labels, mask = torch.tensor([[1.0, 0.0]]), torch.tensor([[3.0, 1.0]]), torch.ones(1, 2, dtype=torch.bool)
    assert LOSSES["ranklist"](rewards, labels, mask, margin=1.0).item() == pytest.approx(math.log(2))
    gap = LOSSES["pairwise"](rewards, labels, mask, margin=0.5, margin_mode="label_gap")  # margin 0.5 * 2 = 1
    assert gap.item() == pytest.approx(math.log(2))
    assert LOSSES["pairwise"](rewards, labels, mask).item() == pytest.approx(ref.softplus(-1.0))


def _strict_batch(zero: bool):
    gen = torch.Generator().manual_seed(1)
    rewards = torch.zeros(3, 5) if zero else torch.randn(3, 5, generator=gen) * 3
    labels = torch.stack([torch.randperm(5, generator=gen).float() for _ in range(3)])
    return rewards, labels, torch.ones(3, 5, dtype=torch.bool)


# listnet only at tied rewards: once softmax(rewards) over-shoots the target it rightly pushes back.
@pytest.mark.parametrize(
    "name, zero",
    [(n, z) for n in ("pairwise", "ranklist", "listmle", "lambdarank") for z in (True, False)] + [("listnet", True)],
)
def test_gradient_pushes_best_up_and_worst_down(name, zero):
    rewards, labels, mask = _strict_batch(zero)
    _, grad = _loss_and_grad(name, {}, rewards, labels, mask)
    assert torch.isfinite(grad).all()
    best, worst = labels.argmax(1, keepdim=True), labels.argmin(1, keepdim=True)
    assert (grad.gather(1, best) < 0).all() and (grad.gather(1, worst) > 0).all()  # descent: best up


def test_sigmoid_loss_gradient_vanishes_on_badly_wrong_pairs_but_ranklist_does_not():
    rewards, labels, mask = torch.tensor([[-20.0, 0.0]]), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool)
    _, grad_sigmoid = _loss_and_grad("ranklist_sigmoid", {}, rewards, labels, mask)
    _, grad_log = _loss_and_grad("ranklist", {}, rewards, labels, mask)
    assert grad_sigmoid.abs().max() < 1e-8 and grad_log[0, 0] == pytest.approx(-1.0)


def test_lambdarank_still_learns_from_all_tied_rewards():
    rewards, labels, mask = _strict_batch(zero=True)
    _, grad = _loss_and_grad("lambdarank", {}, rewards, labels, mask)
    assert grad.abs().sum() > 0


@pytest.mark.parametrize("name, kwargs", LOSS_KWARGS, ids=CASE_IDS)
@pytest.mark.parametrize("case", ["all-tied", "single-items", "all-padding"])
def test_batch_without_pairs_gives_attached_finite_zero(name, kwargs, case):
    labels = torch.full((3, 4), 2.0)
    mask = torch.ones(3, 4, dtype=torch.bool)
    if case == "single-items":
        labels, mask = torch.arange(12.0).view(3, 4), torch.eye(3, 4, dtype=torch.bool)
    if case == "all-padding":
        labels, mask = torch.arange(12.0).view(3, 4), torch.zeros(3, 4, dtype=torch.bool)
    rewards = torch.randn(3, 4).where(mask, float("nan")).requires_grad_(True)
    loss = LOSSES[name](rewards, labels, mask, **kwargs)
    if name in TIE_LOSSES and case == "all-tied":  # the tie models read an all-tied list as evidence
        expected = dict(CASES_BY_ID)[(name, str(kwargs))](rewards.detach(), labels, mask)
        assert loss.item() == pytest.approx(expected, rel=1e-5) and loss.item() > 0
        return
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert (rewards.grad == 0).all()


def test_listmle_random_ties_follow_the_seeded_draw_and_leave_global_rng_alone():
    rewards, labels, mask = ref.random_batch(3)
    state = torch.get_rng_state()
    for seed in range(4):
        # The documented rule: slots shuffled by argsort of the private generator's uniforms,
        # then stably sorted by label, so ties fall in shuffled order.
        u = torch.rand(mask.shape, generator=torch.Generator().manual_seed(seed))
        shuffle_pos = u.argsort(dim=-1).argsort(dim=-1).tolist()
        orders = []
        for row, (_, lab) in enumerate(ref.real_lists(rewards, labels, mask)):
            slots = [s for s in range(mask.shape[1]) if mask[row, s]]
            orders.append(sorted(range(len(lab)), key=lambda i: (-lab[i], shuffle_pos[row][slots[i]])))
        got = listmle(rewards, labels, mask, ties="random", seed=seed)
        assert got.item() == pytest.approx(ref.ref_listmle_orders(rewards, orders, labels, mask), rel=1e-9)
        assert listmle(rewards, labels, mask, ties="random", seed=seed).item() == got.item()
    assert torch.equal(torch.get_rng_state(), state)


def test_listmle_random_ties_vary_with_seed_and_generator_but_reproduce():
    rewards = torch.tensor([[0.0, 1.0, 2.0, 3.0, -1.0]])
    labels, mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]]), torch.ones(1, 5, dtype=torch.bool)
    values = {listmle(rewards, labels, mask, ties="random", seed=s).item() for s in range(6)}
    assert len(values) > 1
    gen = torch.Generator().manual_seed(7)
    first = [listmle(rewards, labels, mask, ties="random", generator=gen).item() for _ in range(6)]
    gen.manual_seed(7)
    assert [listmle(rewards, labels, mask, ties="random", generator=gen).item() for _ in range(6)] == first
    assert len(set(first)) > 1  # a shared generator advances: a fresh tie-break each step


@pytest.mark.parametrize("seed", SEEDS)
def test_listmle_tie_rules_agree_without_ties(seed):
    rewards, _, mask = ref.random_batch(seed)
    labels = torch.stack([torch.randperm(mask.shape[1]) for _ in range(mask.shape[0])]).double()
    breslow = listmle(rewards, labels, mask)
    assert listmle(rewards, labels, mask, ties="random", seed=seed).item() == pytest.approx(breslow.item(), rel=1e-12)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("pairwise", {"margin_mode": "gap"}),
        ("listnet", {"temperature": 0.0}),
        ("listmle", {"ties": "average"}),
        ("lambdarank", {"sigma": -1.0}),
        ("approx_ndcg", {"alpha": 0.0}),
        ("approx_ndcg", {"gain": "exp"}),
        ("neural_ndcg", {"temperature": -1.0}),
        ("lambdaloss", {"scheme": "ndcg1"}),
        ("lambdaloss", {"mu": 0.0}),
        ("regression", {"standardize": "yes"}),
        ("hybrid", {"ranking": "hybrid"}),
        ("hybrid", {"ranking": "bt_ties_davidson"}),
        ("hybrid", {"weight": -1.0}),
        ("bt_ties_davidson", {"tie": 0.0}),
        ("bt_ties_rao_kupper", {"tie": -1.0}),
        ("bt_ties_davidson", {"learn_tie": "yes"}),
        ("bt_ties_rao_kupper", {"tie_lr": 0.0}),
        ("ranklist", {"center_coef": -0.1}),
        ("listnet", {"l2_coef": -1.0}),
    ],
)
def test_bad_config_values_raise_user_errors(name, kwargs):
    rewards, labels, mask = _strict_batch(zero=False)
    with pytest.raises(RankrmError):
        LOSSES[name](rewards, labels, mask, **kwargs)


def test_pair_index_matches_dense_mask_and_reference():
    rewards, labels, mask = ref.random_batch(5)
    b, i, j = pair_index(labels, mask)
    dense = pair_mask(labels, mask)
    expected = sum(len(ref.pairs_of(lab)) for _, lab in ref.real_lists(rewards, labels, mask))
    assert dense[b, i, j].all() and len(b) == dense.sum() == expected


def test_every_loss_has_a_config_whose_kwargs_it_accepts():
    configs = {p.stem: OmegaConf.load(p) for p in CONF.glob("*.yaml") if p.stem != "base"}
    assert set(configs) == set(LOSSES)
    base = OmegaConf.load(CONF / "base.yaml")
    rewards, labels, mask = _strict_batch(zero=False)
    for stem, cfg in configs.items():
        assert cfg.name == stem and set(cfg) == {"defaults", "name", "kwargs"} and cfg.defaults == ["base", "_self_"]
        kwargs = {**base.kwargs, **OmegaConf.to_container(cfg.kwargs)}
        assert torch.isfinite(LOSSES[cfg.name](rewards, labels, mask, **kwargs))


# --- issue 17: allRank's numbers, TRL's centering, OpenAssistant's L2, the tie models --------------


def _allrank_batch(seed: int):
    """allRank's setting: grades 0..3 with a 0 in every list (so its raw 2^y - 1 gain equals rankrm's
    min-shifted one), padding at the end (label -1 for allRank), untied rewards, K = 2..9."""
    gen = torch.Generator().manual_seed(seed)
    b, k = 5, int(torch.randint(2, 10, (1,), generator=gen))
    labels = torch.randint(0, 4, (b, k), generator=gen).double()
    n_real = torch.randint(2, k + 1, (b,), generator=gen)
    mask = torch.arange(k)[None, :] < n_real[:, None]
    for row in range(b):
        slots = torch.randperm(int(n_real[row]), generator=gen)[:2]
        labels[row, slots[0]], labels[row, slots[1]] = 0.0, 2.0  # a 0 and at least one pair
    rewards = torch.randn(b, k, generator=gen, dtype=torch.float64)
    return rewards, labels, mask, labels.masked_fill(~mask, ar.PAD)


@pytest.mark.parametrize("seed", range(8))
def test_approx_and_neural_ndcg_match_allrank(seed):
    rewards, labels, mask, y_true = _allrank_batch(seed)
    approx = LOSSES["approx_ndcg"](rewards, labels, mask, gain="exp2", alpha=2.0)
    assert approx.item() == pytest.approx(1 + ar.approx_ndcg_loss(rewards, y_true, alpha=2.0).item(), abs=1e-12)
    neural = LOSSES["neural_ndcg"](rewards, labels, mask, gain="exp2", temperature=0.5)
    assert neural.item() == pytest.approx(1 + ar.neural_ndcg_loss(rewards, y_true, temperature=0.5).item(), abs=1e-5)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("scheme, allrank_scheme", [("ndcg2", "ndcgLoss2_scheme"), ("ndcg2pp", "ndcgLoss2PP_scheme")])
def test_lambdaloss_matches_allrank_per_list(seed, scheme, allrank_scheme):
    rewards, labels, mask, y_true = _allrank_batch(seed)
    for row in range(len(rewards)):  # allRank sums over the batch: compare list by list
        one = [t[row : row + 1] for t in (rewards, labels, mask)]
        ours = LOSSES["lambdaloss"](*one, scheme=scheme, gain="exp2", mu=5.0, sigma=1.5)
        n_pairs = len(ref.pairs_of([v for v, m in zip(labels[row].tolist(), mask[row].tolist()) if m]))
        theirs = ar.lambda_loss(rewards[row : row + 1], y_true[row : row + 1], allrank_scheme, mu=5.0, sigma=1.5)
        assert (ours * n_pairs).item() == pytest.approx(theirs.item(), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_regression_rmse_on_raw_labels_is_allranks_pointwise_rmse(seed):
    rewards, labels, mask, y_true = _allrank_batch(seed)
    ours = LOSSES["regression"](rewards, labels, mask, standardize=False, rmse=True)
    assert ours.item() == pytest.approx(ar.pointwise_rmse(rewards, y_true).item(), rel=1e-12)


def test_center_coef_is_trls_centering_on_pairs():
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = torch.randn(6, generator=gen), torch.randn(6, generator=gen)
    trl = -F.logsigmoid(chosen - rejected).mean() + 0.01 * torch.mean((chosen + rejected) ** 2)  # RewardTrainer
    rewards, labels = torch.stack([chosen, rejected], 1), torch.tensor([[1.0, 0.0]]).expand(6, 2)
    ours = LOSSES["pairwise"](rewards, labels, torch.ones(6, 2, dtype=torch.bool), center_coef=0.01)
    torch.testing.assert_close(ours, trl)


def _openassistant_rm_loss(logits: torch.Tensor, lengths: list[int], beta: float) -> torch.Tensor:
    """OpenAssistant `RMLoss.forward` (model/model_training/utils/losses.py @ 090c7a1b), re-expressed:
    per conversation, pairs (earlier, later) of its best-first replies, mean of -logsigmoid + beta * l2."""
    out, start = [], 0
    for n in lengths:
        pairs = torch.combinations(torch.arange(n), 2)
        pos, neg = logits[start + pairs[:, 0]], logits[start + pairs[:, 1]]
        out.append((-F.logsigmoid(pos - neg) + beta * 0.5 * (pos**2 + neg**2)).mean())
        start += n
    return torch.stack(out).mean()


def test_l2_coef_is_openassistants_rm_loss():
    gen = torch.Generator().manual_seed(1)
    lengths = [4, 2, 3]
    logits = torch.randn(sum(lengths), generator=gen, dtype=torch.float64)
    rewards = torch.zeros(3, 4, dtype=torch.float64)
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    rewards[mask] = logits
    labels = (torch.tensor(lengths)[:, None] - torch.arange(4)[None, :]).double()  # best first
    ours = LOSSES["ranklist"](rewards, labels, mask, l2_coef=1e-3)
    torch.testing.assert_close(ours, _openassistant_rm_loss(logits, lengths, 1e-3))


@pytest.mark.parametrize(
    "outcome, probs, tie",
    [
        (davidson_logprobs, ref.davidson_probs, 0.4),
        (davidson_logprobs, ref.davidson_probs, 3.0),
        (rao_kupper_logprobs, ref.rao_kupper_probs, 0.1),
        (rao_kupper_logprobs, ref.rao_kupper_probs, 2.0),
    ],
)
def test_tie_models_follow_their_papers_formulas_and_sum_to_one(outcome, probs, tie):
    d = torch.linspace(-30, 30, 121, dtype=torch.float64)
    win, tied = (t.exp() for t in outcome(d, tie))
    lose = outcome(-d, tie)[0].exp()
    torch.testing.assert_close(win + tied + lose, torch.ones_like(d))
    for x in (-3.0, -0.5, 0.0, 0.7, 4.0):
        expected = probs(x, tie)
        got = [t.exp().item() for t in outcome(torch.tensor(x, dtype=torch.float64), tie)]
        assert got == pytest.approx(list(expected[:2]), rel=1e-12)


@pytest.mark.parametrize("name", ["bt_ties_davidson", "bt_ties_rao_kupper"])
def test_a_learned_tie_tensor_gives_the_same_loss_and_gets_a_gradient(name):
    rewards, labels, mask = ref.random_batch(4)
    log_tie = torch.tensor(math.log(0.8), dtype=torch.float64, requires_grad=True)
    loss = LOSSES[name](rewards, labels, mask, tie=log_tie.exp())
    assert loss.item() == pytest.approx(LOSSES[name](rewards, labels, mask, tie=0.8).item(), rel=1e-12)
    loss.backward()
    assert log_tie.grad is not None and log_tie.grad != 0


def test_tied_pairs_pull_rewards_together_and_untied_apart():
    rewards, mask = torch.tensor([[1.0, -1.0], [1.0, -1.0]]), torch.ones(2, 2, dtype=torch.bool)
    labels = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # list 0: a tie; list 1: slot 0 wins
    for name in TIE_LOSSES:
        _, grad = _loss_and_grad(name, {}, rewards, labels, mask)
        assert grad[0, 0] > 0 and grad[0, 1] < 0  # descent moves the tied rewards towards each other
        assert grad[1, 0] < 0 and grad[1, 1] > 0  # and the untied ones apart


@pytest.mark.parametrize(
    "name, zero",
    [(n, True) for n in ("approx_ndcg", "neural_ndcg", "regression", "hybrid")]
    + [(n, z) for n in ("lambdaloss", *TIE_LOSSES) for z in (True, False)],
)
def test_new_losses_push_best_up_and_worst_down(name, zero):
    rewards, labels, mask = _strict_batch(zero)
    _, grad = _loss_and_grad(name, {}, rewards, labels, mask)
    assert torch.isfinite(grad).all()
    best, worst = labels.argmax(1, keepdim=True), labels.argmin(1, keepdim=True)
    assert (grad.gather(1, best) < 0).all() and (grad.gather(1, worst) > 0).all()


def test_split_separates_what_the_module_learns():
    kwargs, learned = LOSSES["bt_ties_davidson"].split({"tie": 0.5, "learn_tie": True, "tie_lr": 0.2, "l2_coef": 0.1})
    assert kwargs == {"tie": 0.5, "l2_coef": 0.1} and learned == {"tie": 0.2}
    assert LOSSES["bt_ties_davidson"].split({"tie": 0.5})[1] == {}
    assert LOSSES["ranklist"].split({"margin": 1.0}) == ({"margin": 1.0}, {})
