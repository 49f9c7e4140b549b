"""LightningModule: a RewardModel trained with a ranking loss from `rankrm.losses.LOSSES`."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch.optim.lr_scheduler import LambdaLR

from rankrm.errors import RankrmError
from rankrm.io import atomic_write_with
from rankrm.losses import LOSSES, Loss
from rankrm.metrics import RankingMetrics
from rankrm.model import RewardModel

Batch = Mapping[str, torch.Tensor]


def loss_fn(name: str) -> Loss:
    if name not in LOSSES:
        raise RankrmError(f"unknown loss {name!r}; choices: {', '.join(sorted(LOSSES))}")
    return LOSSES[name]


class RankRMModule(pl.LightningModule):
    """Scores every response of a batch of lists in one forward and applies a ranking loss.

    `optimizer` and `scheduler` are partials from Hydra (`_partial_: true`): the module fills in
    the trainable parameters and the total number of steps.
    """

    def __init__(
        self,
        model: RewardModel,
        loss_name: str,
        loss_kwargs: Mapping[str, Any] | None,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., LambdaLR] | None = None,
        metric_cutoffs: tuple[int, ...] = (1, 3),
    ) -> None:
        super().__init__()
        # from_pretrained returns eval mode and Lightning never calls train(): without this a pretrained
        # backbone would train with dropout silently off (backbone.dropout=0.0 turns it off on purpose).
        self.model = model.train()
        self.loss_name, self.loss = loss_name, loss_fn(loss_name)  # the name goes into the export metadata
        self.loss_kwargs, self.loss_param_lrs = self.loss.split(dict(loss_kwargs or {}))
        # Loss parameters learned with the model (e.g. a tie model's tie), kept as their log so they stay
        # > 0; in the state dict, hence in every checkpoint, so a resumed run continues from them.
        self.loss_params = torch.nn.ParameterDict(
            {f"log_{n}": torch.nn.Parameter(torch.tensor(math.log(self.loss_kwargs[n]))) for n in self.loss_param_lrs}
        )
        self.optimizer_factory, self.scheduler_factory = optimizer, scheduler
        self.val_metrics = RankingMetrics(cutoffs=tuple(metric_cutoffs))
        self.test_metrics = RankingMetrics(cutoffs=tuple(metric_cutoffs))
        # Compute counters for the ablations: sequences sent through the backbone in training.
        self.register_buffer("sequences_encoded", torch.zeros((), dtype=torch.long), persistent=True)
        self._loader_states: list[dict[str, int]] | None = None  # train loader position from a resumed checkpoint

    def forward(self, batch: Batch) -> torch.Tensor:
        """Rewards (B, K): one backbone forward over the N real responses, scattered into the grid."""
        scores = self.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (N,)
        mask = batch["mask"]  # (B, K)
        return scores.new_zeros(mask.shape).masked_scatter(mask, scores.to(mask.device))  # (B, K)

    def current_loss_kwargs(self) -> dict[str, Any]:
        """The loss kwargs with every learned parameter at its current value (exp of its log)."""
        return {**self.loss_kwargs, **{n: self.loss_params[f"log_{n}"].exp() for n in self.loss_param_lrs}}

    def loss_metadata(self) -> dict[str, Any]:
        """What the export's rankrm.json records of the loss: name, kwargs, learned values."""
        learned = {n: float(self.loss_params[f"log_{n}"].detach().exp()) for n in self.loss_param_lrs}
        return {"name": self.loss_name, "kwargs": {**self.loss_kwargs, **learned}, "learned": sorted(learned)}

    def _loss(self, rewards: torch.Tensor, batch: Batch) -> torch.Tensor:
        return self.loss(rewards.float(), batch["labels"], batch["mask"], **self.current_loss_kwargs())

    def _check_finite(self, loss: torch.Tensor, stage: str, batch_idx: int) -> None:
        if not torch.isfinite(loss):
            raise RankrmError(
                f"non-finite {stage} loss ({loss.item()}) at global step {self.global_step}, "
                f"epoch {self.current_epoch}, {stage} batch {batch_idx}: lower optimizer.lr, keep "
                "trainer.gradient_clip_val on, or use trainer.precision=32-true; the run stopped and "
                "no checkpoint was written from this step"
            )

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        rewards = self(batch)
        loss = self._loss(rewards, batch)
        self._check_finite(loss, "train", batch_idx)
        n = torch.tensor(batch["input_ids"].shape[0], device=self.sequences_encoded.device)
        # Summed over DDP ranks every step, so the counter (and every checkpoint of it) is the global count.
        self.sequences_encoded += self.trainer.strategy.reduce(n, reduce_op="sum") if self.trainer.world_size > 1 else n
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["mask"].shape[0])
        return loss

    def _eval_step(self, batch: Batch, batch_idx: int, stage: str, metrics: RankingMetrics) -> None:
        rewards = self(batch)
        loss = self._loss(rewards, batch)
        self._check_finite(loss, stage, batch_idx)
        self.log(f"{stage}/loss", loss, batch_size=batch["mask"].shape[0], sync_dist=True)
        tie = self.current_loss_kwargs().get("tie") if self.loss.outcome is not None else None
        tie = tie.detach() if isinstance(tie, torch.Tensor) else tie
        metrics.update(rewards.float(), batch["labels"], batch["mask"], outcome=self.loss.outcome, tie=tie)

    def _eval_epoch_end(self, stage: str, metrics: RankingMetrics) -> None:
        values = metrics.compute()  # synced across ranks by torchmetrics
        metrics.reset()
        values.update({n: self.loss_params[f"log_{n}"].detach().exp() for n in self.loss_param_lrs})
        self.log_dict({f"{stage}/{k}": v.float() for k, v in values.items()}, prog_bar=False)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "val", self.val_metrics)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", self.val_metrics)

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, batch_idx, "test", self.test_metrics)

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test", self.test_metrics)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Dropout draws from the global RNG: without its state a resumed run would draw other masks.
        # A plain tensor, so checkpoints still load with torch.load(weights_only=True).
        checkpoint["torch_rng_state"] = torch.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torch_rng_state" in checkpoint:
            torch.set_rng_state(checkpoint["torch_rng_state"])
        # Where the train loader was in its epoch (Lightning saves it for loaders with a state_dict()).
        self._loader_states = (
            checkpoint.get("loops", {}).get("fit_loop", {}).get("state_dict", {}).get("combined_loader")
        )

    def on_train_start(self) -> None:
        # Lightning hands the saved loader state only to a train loader built after the restore, but
        # counting the steps for the LR schedule (configure_optimizers) builds it before: hand it over
        # here, before the first batch is drawn, so a mid-epoch resume skips the batches already done.
        states, self._loader_states = self._loader_states, None
        loader = self.trainer.train_dataloader
        if states and hasattr(loader, "load_state_dict"):
            loader.load_state_dict(states[0])

    def configure_optimizers(self) -> dict[str, Any]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise RankrmError("no trainable parameters: check backbone.freeze")
        # A learned loss parameter gets its own learning rate (the backbone's would barely move it in a
        # run) and no weight decay (which would pull log(tie) to 0, i.e. tie to 1).
        groups = [{"params": params}] + [
            {"params": [self.loss_params[f"log_{n}"]], "lr": lr, "weight_decay": 0.0}
            for n, lr in self.loss_param_lrs.items()
        ]
        optimizer = self.optimizer_factory(params=groups)  # hyperparameters: see rankrm.preflight.check_optimizer
        if self.scheduler_factory is None:
            return {"optimizer": optimizer}
        scheduler = self.scheduler_factory(
            optimizer=optimizer, total_steps=int(self.trainer.estimated_stepping_batches)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each .ckpt through `atomic_write_with`: a killed run never leaves a truncated checkpoint.

    Lightning's own save stages the file in the system temp dir and moves it, which is a copy
    (not atomic) when that dir is on another filesystem than the run dir. torch.save streams into
    the temp file: serialising to bytes first held two copies of the checkpoint in RAM (weights +
    AdamW moments: 2 x 1.6 GB for SmolLM2-135M; a gradient-checkpointed run's peak fell 8.0 -> 6.8 GB).
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_write_with(path, lambda f: torch.save(checkpoint, f))


def load_weights(module: torch.nn.Module, ckpt_path: str) -> None:
    """Load a Lightning checkpoint's weights safely (no pickled code is executed). Memory-mapped: the
    optimizer state in the file (2x the weights for AdamW) is never read into RAM."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    module.load_state_dict(state["state_dict"])


@torch.no_grad()
def reference_stats(module: RankRMModule, loader: Any) -> tuple[float, float]:
    """Mean and std of the model's raw scores over a reference set (for reward normalisation)."""
    module.eval()
    dev = next(module.model.parameters()).device
    scores = [
        module.model(
            b["input_ids"].to(dev),
            b["attention_mask"].to(dev),
            None if b.get("token_type_ids") is None else b["token_type_ids"].to(dev),
            normalize=False,
        )
        for b in loader
    ]  # raw scores: never normalise twice
    s = torch.cat(scores).float()  # (N_total,)
    return s.mean().item(), s.std().clamp_min(1e-6).item()
