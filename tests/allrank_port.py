"""allRank's losses, re-expressed here as the reference for `rankrm.losses` (allRank is Apache-2.0).

allRank (github.com/allegro/allRank) is not installable next to rankrm: its last release on PyPI
(allRank 1.4.3, 2021) pins torch <= 1.8 and torchvision <= 0.9. So its functions are followed here
step by step, with its conventions: labels are relevance grades >= 0, padded slots are marked by
the label -1 and always sit at the end of a list, gains are 2^y - 1 of the raw labels, sorts are by
descending prediction. Sources (file @ commit):

- `allrank/models/losses/approxNDCG.py` @ f992cf7c4b3f03887e8d8dd3ed1fa29c1ca61ad4 (`approxNDCGLoss`)
- `allrank/models/losses/neuralNDCG.py` @ 02c3e75b656344532f9ccaf6f197ebb548e465a6 (`neuralNDCG`),
  with `deterministic_neural_sort` and `sinkhorn_scaling` from `loss_utils.py` @ the same commit and
  `dcg` from `allrank/models/metrics.py` @ 2d2982abf746598e5f33b7d8d6615129cbe5c98f
- `allrank/models/losses/lambdaLoss.py` @ 5fc2eb7e8fbee238539151ad399e504acf0519b3 (`lambdaLoss` with
  `ndcgLoss2_scheme`, `lambdaRank_scheme`, `ndcgLoss2PP_scheme`)
- `allrank/models/losses/pointwise.py` @ f992cf7c4b3f03887e8d8dd3ed1fa29c1ca61ad4 (`pointwise_rmse`)
"""

from __future__ import annotations

import torch

PAD = -1.0  # allRank's PADDED_Y_VALUE
EPS = 1e-10  # allRank's DEFAULT_EPS


def _sorted_by_preds(y_pred, y_true):
    """Predictions sorted descending, the labels in that order, the labels sorted, padded pairs."""
    pad = y_true == PAD
    y_pred = y_pred.masked_fill(pad, float("-inf"))
    y_true = y_true.masked_fill(pad, float("-inf"))
    pred_sorted, order = y_pred.sort(descending=True, dim=-1)
    true_sorted = y_true.sort(descending=True, dim=-1).values
    true_by_pred = y_true.gather(1, order)
    true_diffs = true_by_pred[:, :, None] - true_by_pred[:, None, :]
    return pred_sorted, true_by_pred, true_sorted, true_diffs


def approx_ndcg_loss(y_pred, y_true, alpha=1.0):
    pred_sorted, true_by_pred, true_sorted, true_diffs = _sorted_by_preds(y_pred, y_true)
    real_pairs = torch.isfinite(true_diffs)
    real_pairs.diagonal(dim1=-2, dim2=-1).zero_()
    true_by_pred, true_sorted = true_by_pred.clamp(min=0.0), true_sorted.clamp(min=0.0)
    positions = torch.arange(1, y_pred.shape[1] + 1, dtype=y_pred.dtype)
    discount = torch.log2(1.0 + positions)[None, :]
    max_dcg = ((2.0**true_sorted - 1) / discount).sum(dim=-1).clamp(min=EPS)
    gains = (2.0**true_by_pred - 1) / max_dcg[:, None]
    diffs = (pred_sorted[:, :, None] - pred_sorted[:, None, :]).masked_fill(~real_pairs, 0.0)
    approx_pos = 1.0 + (real_pairs * torch.sigmoid(-alpha * diffs).clamp(min=EPS)).sum(dim=-1)
    return -(gains / torch.log2(1.0 + approx_pos)).sum(dim=-1).mean()


def _neural_sort(s, tau, pad):
    """allRank's deterministic_neural_sort: (B, n) scores -> (B, n, n) P[b, rank, item]."""
    n = s.shape[1]
    s = s.masked_fill(pad, -1e8)[:, :, None]
    a_s = (s - s.transpose(1, 2)).abs().masked_fill(pad[:, :, None] | pad[:, None, :], 0.0)
    b = a_s @ torch.ones(n, n, dtype=s.dtype)
    scaling = torch.zeros(s.shape[0], n, dtype=s.dtype)
    for row, n_pad in enumerate(pad.sum(dim=1).tolist()):
        real = n - n_pad
        scaling[row, :real] = real + 1 - 2 * (torch.arange(real, dtype=s.dtype) + 1)
    c = s.masked_fill(pad[:, :, None], 0.0) @ scaling[:, None, :]
    p_max = (c - b).transpose(1, 2)
    p_max = p_max.masked_fill(pad[:, :, None] | pad[:, None, :], float("-inf"))
    p_max = p_max.masked_fill(pad[:, :, None] & pad[:, None, :], 1.0)
    return (p_max / tau).softmax(dim=-1)


def _sinkhorn(mat, pad, tol=1e-6, max_iter=50):
    mat = mat.masked_fill(pad[:, None, :] | pad[:, :, None], 0.0)
    mat = mat.masked_fill(pad[:, None, :] & pad[:, :, None], 1.0)
    for _ in range(max_iter):
        mat = mat / mat.sum(dim=1, keepdim=True).clamp(min=EPS)
        mat = mat / mat.sum(dim=2, keepdim=True).clamp(min=EPS)
        if (mat.sum(dim=2) - 1).abs().max() < tol and (mat.sum(dim=1) - 1).abs().max() < tol:
            break
    return mat.masked_fill(pad[:, None, :] | pad[:, :, None], 0.0)


def _idcg(y_true):
    """allRank's dcg(y_true, y_true) at the full length, gain 2^y - 1, padded labels as 0."""
    y = y_true.masked_fill(y_true == PAD, 0.0).sort(descending=True, dim=-1).values
    discount = 1.0 / torch.log2(torch.arange(y.shape[1], dtype=y.dtype) + 2.0)
    return ((2.0**y - 1) * discount).sum(dim=-1)


def neural_ndcg_loss(y_pred, y_true, temperature=1.0):
    pad = y_true == PAD
    p_hat = _sinkhorn(_neural_sort(y_pred, temperature, pad), pad)
    p_hat = p_hat.masked_fill(pad[:, :, None] | pad[:, None, :], 0.0)
    gains = 2.0 ** y_true.masked_fill(pad, 0.0) - 1.0
    expected = (p_hat @ gains[:, :, None]).squeeze(-1)
    discount = 1.0 / torch.log2(torch.arange(y_true.shape[1], dtype=y_pred.dtype) + 2.0)
    idcg = _idcg(y_true)
    ndcg = ((expected * discount).sum(dim=-1) / (idcg + EPS)).masked_fill(idcg == 0, 0.0)
    return -ndcg.sum() / (idcg != 0).sum()


def lambda_loss(y_pred, y_true, scheme, mu=10.0, sigma=1.0):
    """`lambdaLoss(..., weighing_scheme=scheme, k=None, reduction="sum", reduction_log="natural")`."""
    pred_sorted, true_by_pred, true_sorted, true_diffs = _sorted_by_preds(y_pred, y_true)
    valid = torch.isfinite(true_diffs) & (true_diffs > 0)
    true_by_pred, true_sorted = true_by_pred.clamp(min=0.0), true_sorted.clamp(min=0.0)
    positions = torch.arange(1, y_pred.shape[1] + 1, dtype=y_pred.dtype)
    discount = torch.log2(1.0 + positions)[None, :]
    max_dcg = ((2.0**true_sorted - 1) / discount).sum(dim=-1).clamp(min=EPS)
    g = (2.0**true_by_pred - 1) / max_dcg[:, None]
    gain_gap = (g[:, :, None] - g[:, None, :]).abs()
    gap = (positions[:, None] - positions[None, :]).abs().long()
    ndcg2 = (1.0 / discount[0, gap - 1] - 1.0 / discount[0, gap]).abs()
    ndcg2.diagonal().zero_()
    weights = ndcg2[None] * gain_gap
    if scheme == "ndcgLoss2PP_scheme":
        lambdarank = (1.0 / discount[:, :, None] - 1.0 / discount[:, None, :]).abs() * gain_gap
        weights = mu * weights + lambdarank
    diffs = (pred_sorted[:, :, None] - pred_sorted[:, None, :]).clamp(min=-1e8, max=1e8)
    probas = (torch.sigmoid(sigma * diffs).clamp(min=EPS) ** weights).clamp(min=EPS)
    return -torch.log(probas)[valid].sum()


def pointwise_rmse(y_pred, y_true, no_of_levels=1.0):
    pad = y_true == PAD
    errors = y_true.masked_fill(pad, 0.0) - no_of_levels * y_pred.masked_fill(pad, 0.0)
    mse = (errors**2).sum(dim=1) / (~pad).sum(dim=1)
    return mse.sqrt().mean()
