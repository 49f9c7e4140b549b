"""A callback the DDP reliability test passes to the real CLI (`+callbacks.kill._target_=ddp_helpers.KillRank`,
with tests/ on PYTHONPATH): one rank kills itself as a crash or the OOM killer would."""

from __future__ import annotations

import os
import signal
from typing import Any

import lightning.pytorch as pl


class KillRank(pl.Callback):
    """SIGKILL the process of global rank `rank` once `step` optimizer steps are done."""

    def __init__(self, rank: int = 1, step: int = 3) -> None:
        self.rank, self.step = rank, step

    def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
        if trainer.global_rank == self.rank and trainer.global_step >= self.step:
            os.kill(os.getpid(), signal.SIGKILL)
