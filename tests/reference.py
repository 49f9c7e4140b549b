"""Slow, obviously-correct references for rankrm.losses / rankrm.metrics, and random batches.

Everything here loops in plain Python over lists and pairs, reading only the real (unmasked)
responses, so it shares no code and no tensor tricks with the vectorised implementation.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def random_batch(seed: int, dtype: torch.dtype = torch.float64):
    """A random (rewards, labels, mask) batch: K in 2..9, random (non-prefix) padding, label ties,
    all-tied lists, reward ties, lists with 0/1 real items, and garbage (NaN, inf) in padding."""
    rng = np.random.default_rng(seed)
    b, k = int(rng.integers(1, 7)), int(rng.integers(2, 10))
    rewards = rng.normal(size=(b, k))
    labels = np.zeros((b, k))
    mask = np.zeros((b, k), dtype=bool)
    for row in range(b):
        kind = rng.choice(["strict", "graded", "tied"], p=[0.45, 0.45, 0.1])
        labels[row] = {"strict": rng.permutation(k), "graded": rng.integers(0, 3, k), "tied": np.full(k, 2.0)}[kind]
        n_real = int(rng.integers(0, k + 1)) if rng.random() < 0.15 else int(rng.integers(2, k + 1))
        slots = np.arange(n_real) if rng.random() < 0.5 else rng.choice(k, n_real, replace=False)
        mask[row, slots] = True
        if rng.random() < 0.3:  # exact reward ties
            rewards[row] = np.round(rewards[row])
    garbage = rng.choice([np.nan, np.inf, -np.inf, 1e30, -7.0], size=(2, b, k))
    rewards = np.where(mask, rewards, garbage[0])
    labels = np.where(mask, labels, garbage[1])
    return (torch.tensor(rewards, dtype=dtype), torch.tensor(labels, dtype=dtype), torch.tensor(mask))


def real_lists(rewards, labels, mask):
    """Yield (r, l) per list: Python floats of the real responses, in slot order."""
    for r_row, l_row, m_row in zip(rewards.tolist(), labels.tolist(), mask.tolist()):
        yield [r for r, m in zip(r_row, m_row) if m], [v for v, m in zip(l_row, m_row) if m]


def softplus(x: float) -> float:
    """log(1 + e^x) without overflow; -logsigmoid(d) = softplus(-d)."""
    return x + math.log1p(math.exp(-x)) if x > 0 else math.log1p(math.exp(x))


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


def pairs_of(l):
    """All (i, j) with l[i] > l[j]."""
    return [(i, j) for i in range(len(l)) for j in range(len(l)) if l[i] > l[j]]


def mean(xs) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _margin(l, i, j, margin, margin_mode):
    return margin if margin_mode == "constant" else margin * (l[i] - l[j])


def ref_pairwise(rewards, labels, mask, margin=0.0, margin_mode="constant"):
    terms = []
    for r, l in real_lists(rewards, labels, mask):
        terms += [softplus(-(r[i] - r[j] - _margin(l, i, j, margin, margin_mode))) for i, j in pairs_of(l)]
    return mean(terms)


def _per_list(rewards, labels, mask, fn):
    """Mean over lists with >= 1 pair of fn(r, l)."""
    return mean([fn(r, l) for r, l in real_lists(rewards, labels, mask) if pairs_of(l)])


def ref_ranklist(rewards, labels, mask, margin=0.0, margin_mode="constant"):
    return _per_list(
        rewards,
        labels,
        mask,
        lambda r, l: mean([softplus(-(r[i] - r[j] - _margin(l, i, j, margin, margin_mode))) for i, j in pairs_of(l)]),
    )


def ref_ranklist_sigmoid(rewards, labels, mask, margin=0.0, margin_mode="constant"):
    return _per_list(
        rewards,
        labels,
        mask,
        lambda r, l: -mean([sigmoid(r[i] - r[j] - _margin(l, i, j, margin, margin_mode)) for i, j in pairs_of(l)]),
    )


def _log_softmax(x):
    top = max(x)
    lse = top + math.log(sum(math.exp(v - top) for v in x))
    return [v - lse for v in x]


def ref_listnet(rewards, labels, mask, temperature=1.0):
    def ce(r, l):
        p = [math.exp(v) for v in _log_softmax([v / temperature for v in l])]
        return -sum(pi * qi for pi, qi in zip(p, _log_softmax(r)))

    return _per_list(rewards, labels, mask, ce)


def _logsumexp(xs):
    top = max(xs)
    return top + math.log(sum(math.exp(x - top) for x in xs))


def plackett_luce_nll(r, order):
    """-log P(order | r) under Plackett-Luce, `order` = item indices best first."""
    return sum(_logsumexp([r[q] for q in order[p:]]) - r[order[p]] for p in range(len(order)))


def ref_listmle_breslow(rewards, labels, mask):
    """Breslow ties: item i's denominator runs over every item not labelled above it."""
    return _per_list(
        rewards,
        labels,
        mask,
        lambda r, l: sum(_logsumexp([r[k] for k in range(len(r)) if l[k] <= l[i]]) - r[i] for i in range(len(r))),
    )


def ref_listmle_orders(rewards, orders, labels, mask):
    """ListMLE given an explicit best-first order (of real-item indices) per list."""
    lists = list(real_lists(rewards, labels, mask))
    return mean([plackett_luce_nll(r, o) for (r, l), o in zip(lists, orders) if pairs_of(l)])


def _dcg_disc(pos, k=None):
    return 0.0 if k is not None and pos >= k else 1.0 / math.log2(pos + 2)


def ref_lambdarank(rewards, labels, mask, sigma=1.0):
    def loss(r, l):
        g = [v - min(l) for v in l]
        disc = []
        for i in range(len(r)):  # reward ties: worse label first; full ties share positions
            ahead = sum(r[k] > r[i] or (r[k] == r[i] and g[k] < g[i]) for k in range(len(r)))
            group = sum(r[k] == r[i] and g[k] == g[i] for k in range(len(r)))
            disc.append(mean([_dcg_disc(p) for p in range(ahead, ahead + group)]))
        idcg = sum(_dcg_disc(p) * v for p, v in enumerate(sorted(g, reverse=True)))
        return mean(
            [
                abs(g[i] - g[j]) * abs(disc[i] - disc[j]) / idcg * softplus(-sigma * (r[i] - r[j]))
                for i, j in pairs_of(l)
            ]
        )

    return _per_list(rewards, labels, mask, loss)


def ref_pair_accuracy(rewards, labels, mask):
    hits = [r[i] > r[j] for r, l in real_lists(rewards, labels, mask) for i, j in pairs_of(l)]
    return mean([float(h) for h in hits])


def ref_kendall_tau_b(r, l):
    """tau-b = (C - D) / sqrt((n0 - n1)(n0 - n2)), 0 when a ranking is all ties."""
    sign = lambda x: (x > 0) - (x < 0)  # noqa: E731
    pairs = [(i, j) for i in range(len(r)) for j in range(i + 1, len(r))]
    s = sum(sign(r[i] - r[j]) * sign(l[i] - l[j]) for i, j in pairs)
    untied_r = sum(r[i] != r[j] for i, j in pairs)
    untied_l = sum(l[i] != l[j] for i, j in pairs)
    return s / math.sqrt(untied_r * untied_l) if untied_r and untied_l else 0.0


def ref_kendall_tau(rewards, labels, mask):
    return _per_list(rewards, labels, mask, ref_kendall_tau_b)


def ref_ndcg_list(r, l, k=None):
    """Tie-averaged NDCG: a group of equal rewards shares its positions' discounts evenly."""
    g = [v - min(l) for v in l]
    dcg = 0.0
    for i in range(len(r)):
        above = sum(x > r[i] for x in r)
        group = sum(x == r[i] for x in r)
        dcg += g[i] * mean([_dcg_disc(p, k) for p in range(above, above + group)])
    idcg = sum(_dcg_disc(p, k) * v for p, v in enumerate(sorted(g, reverse=True)))
    return dcg / idcg


def ref_ndcg(rewards, labels, mask, k=None):
    return _per_list(rewards, labels, mask, lambda r, l: ref_ndcg_list(r, l, k))


def ref_top1(rewards, labels, mask):
    def top1(r, l):
        top = [i for i in range(len(r)) if r[i] == max(r)]
        return sum(l[i] == max(l) for i in top) / len(top)

    return _per_list(rewards, labels, mask, top1)


def ref_exact_order(rewards, labels, mask):
    return _per_list(rewards, labels, mask, lambda r, l: float(all(r[i] > r[j] for i, j in pairs_of(l))))


# --- issue 17: NDCG surrogates, regression, regularisers, tie models -------------------------------


def _gains(l, gain="linear"):
    return [(v - min(l)) if gain == "linear" else 2.0 ** (v - min(l)) - 1.0 for v in l]


def _idcg(g):
    return sum(_dcg_disc(p) * v for p, v in enumerate(sorted(g, reverse=True)))


def ref_approx_ndcg(rewards, labels, mask, alpha=1.0, gain="linear"):
    def loss(r, l):
        g = _gains(l, gain)
        pos = [1 + sum(sigmoid(alpha * (r[j] - r[i])) for j in range(len(r)) if j != i) for i in range(len(r))]
        return 1 - sum(g[i] / math.log2(1 + pos[i]) for i in range(len(r))) / _idcg(g)

    return _per_list(rewards, labels, mask, loss)


def neural_sort_matrix(r, tau=1.0, iters=50):
    """NeuralSort's P[p][j] for the real items r, then `iters` Sinkhorn rounds (columns, then rows)."""
    n = len(r)
    p = []
    for rank in range(n):
        logits = [((n - 1 - 2 * rank) * r[j] - sum(abs(r[j] - r[k]) for k in range(n))) / tau for j in range(n)]
        p.append([math.exp(v) for v in _log_softmax(logits)])
    for _ in range(iters):
        cols = [sum(p[q][j] for q in range(n)) for j in range(n)]
        p = [[p[q][j] / cols[j] for j in range(n)] for q in range(n)]
        p = [[v / sum(row) for v in row] for row in p]
    return p


def ref_neural_ndcg(rewards, labels, mask, temperature=1.0, gain="linear", sinkhorn_iters=50):
    def loss(r, l):
        g = _gains(l, gain)
        p = neural_sort_matrix(r, temperature, sinkhorn_iters)
        dcg = sum(_dcg_disc(q) * sum(p[q][j] * g[j] for j in range(len(r))) for q in range(len(r)))
        return 1 - dcg / _idcg(g)

    return _per_list(rewards, labels, mask, loss)


def _positions(r, g):
    """Each item's possible 0-based positions in the reward order: reward ties worse label first,
    items tied in reward and label share their block of positions."""
    out = []
    for i in range(len(r)):
        ahead = sum(r[k] > r[i] or (r[k] == r[i] and g[k] < g[i]) for k in range(len(r)))
        group = sum(r[k] == r[i] and g[k] == g[i] for k in range(len(r)))
        out.append(range(ahead, ahead + group))
    return out


def ref_lambdaloss(rewards, labels, mask, scheme="ndcg2", mu=10.0, sigma=1.0, gain="linear"):
    delta = lambda m: abs(1 / math.log2(1 + m) - 1 / math.log2(2 + m))  # noqa: E731

    def loss(r, l):
        g = _gains(l, gain)
        big_g = [v / _idcg(g) for v in g]
        pos = _positions(r, g)
        disc = [mean([_dcg_disc(p) for p in ps]) for ps in pos]
        terms = []
        for i, j in pairs_of(l):
            w = abs(big_g[i] - big_g[j]) * mean([delta(abs(p - q)) for p in pos[i] for q in pos[j]])
            if scheme == "ndcg2pp":
                w = mu * w + abs(big_g[i] - big_g[j]) * abs(disc[i] - disc[j])
            terms.append(w * softplus(-sigma * (r[i] - r[j])))
        return mean(terms)

    return _per_list(rewards, labels, mask, loss)


def _zscore(l):
    m = mean(l)
    sd = math.sqrt(mean([(v - m) ** 2 for v in l]))
    return [(v - m) / sd for v in l]


def ref_regression(rewards, labels, mask, standardize=True, rmse=False):
    def loss(r, l):
        target = _zscore(l) if standardize else l
        mse = mean([(a - b) ** 2 for a, b in zip(r, target)])
        return math.sqrt(mse) if rmse else mse

    return _per_list(rewards, labels, mask, loss)


def ref_center(rewards, labels, mask):
    """TRL: mean over all pairs of the batch of (r_chosen + r_rejected)^2."""
    return mean([(r[i] + r[j]) ** 2 for r, l in real_lists(rewards, labels, mask) for i, j in pairs_of(l)])


def ref_l2(rewards, labels, mask):
    """OpenAssistant RMLoss's beta term: per list mean of 0.5 (r_i^2 + r_j^2) over its pairs, mean over lists."""
    return _per_list(rewards, labels, mask, lambda r, l: mean([0.5 * (r[i] ** 2 + r[j] ** 2) for i, j in pairs_of(l)]))


def davidson_probs(d, nu):
    """(P(i beats j), P(tie), P(j beats i)) straight from Davidson's formula with pi = e^r, d = r_i - r_j."""
    pi_i, pi_j = math.exp(d), 1.0
    den = pi_i + pi_j + nu * math.sqrt(pi_i * pi_j)
    return pi_i / den, nu * math.sqrt(pi_i * pi_j) / den, pi_j / den


def rao_kupper_probs(d, eta):
    """(P(i beats j), P(tie), P(j beats i)) straight from Rao & Kupper's formula, theta = e^eta."""
    pi_i, pi_j, theta = math.exp(d), 1.0, math.exp(eta)
    win, lose = pi_i / (pi_i + theta * pi_j), pi_j / (pi_j + theta * pi_i)
    tie = (theta**2 - 1) * pi_i * pi_j / ((pi_i + theta * pi_j) * (theta * pi_i + pi_j))
    return win, tie, lose


def tied_pairs_of(l):
    """All unordered (i, j), i < j, with l[i] == l[j]."""
    return [(i, j) for i in range(len(l)) for j in range(i + 1, len(l)) if l[i] == l[j]]


def ref_bt_ties(rewards, labels, mask, probs, tie):
    per_list = []
    for r, l in real_lists(rewards, labels, mask):
        terms = [-math.log(probs(r[i] - r[j], tie)[0]) for i, j in pairs_of(l)]
        terms += [-math.log(probs(r[i] - r[j], tie)[1]) for i, j in tied_pairs_of(l)]
        if terms:
            per_list.append(mean(terms))
    return mean(per_list)


def ref_tie_metrics(rewards, labels, mask, probs=None, tie=None):
    """Tie metrics by brute force: tie_auc (per list, over (tied, untied) pair couples), outcome_acc
    (3-way call over all pairs), and for a tie model the NLLs."""
    aucs, correct, total, tie_nll, nll = [], 0, 0, [], []
    for r, l in real_lists(rewards, labels, mask):
        tied, untied = tied_pairs_of(l), pairs_of(l)
        gaps_t = [abs(r[i] - r[j]) for i, j in tied]
        gaps_u = [abs(r[i] - r[j]) for i, j in untied]
        if gaps_t and gaps_u:
            aucs.append(mean([(a < b) + 0.5 * (a == b) for a in gaps_t for b in gaps_u]))
        for i, j in untied + tied:
            total += 1
            if probs is None:
                win, tie_p, lose = float(r[i] > r[j]), 0.0, float(r[i] < r[j])
            else:
                win, tie_p, lose = probs(r[i] - r[j], tie)
            call_tie = tie_p > max(win, lose)
            correct += call_tie if (i, j) in tied else (not call_tie and win > lose)
            if probs is not None:
                p = tie_p if (i, j) in tied else win
                nll.append(-math.log(p))
                if (i, j) in tied:
                    tie_nll.append(-math.log(p))
    out = {"tie_auc": mean(aucs), "outcome_acc": correct / total if total else 0.0}
    if probs is not None:
        out.update(tie_nll=mean(tie_nll), outcome_nll=mean(nll))
    return out
