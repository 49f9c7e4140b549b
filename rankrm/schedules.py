"""Learning-rate schedules, kept free of Lightning so a bad scheduler config fails in preflight at once."""

from __future__ import annotations

import math

import torch
from torch.optim.lr_scheduler import LambdaLR


def warmup_decay(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_ratio: float = 0.1, decay: str = "linear"
) -> LambdaLR:
    """Linear warmup over `warmup_ratio * total_steps`, then linear/cosine decay to 0 or constant.
    The config's values are checked by its schema (rankrm.config.loop.Scheduler)."""
    warmup = int(warmup_ratio * total_steps)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        if decay == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return 1.0 - progress if decay == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)
