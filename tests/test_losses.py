"""rankrm.losses and rankrm.pairs against slow loop references (tests/reference.py)."""

from __future__ import annotations

import math

import pytest
import reference as ref
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf

from rankrm import CONF_DIR
from rankrm.errors import RankrmError
from rankrm.losses import LOSSES, listmle
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
]
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
