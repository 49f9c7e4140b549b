"""Checks that need no model, run before Lightning / transformers load: a typo or a bad data line
fails in about a second with one message naming the key (and rule) or the file, line and field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rankrm.errors import RankrmError


def check_config(cfg: DictConfig) -> None:
    """Every field of every config group against its schema, and the cross-field rules (rankrm.config)."""
    from rankrm.config import validate

    validate(cfg)


def check_loss(loss_cfg: DictConfig) -> None:
    """The loss name and kwargs, tried on a one-list batch: a bad kwarg fails here, not at step 1."""
    import torch

    from rankrm.losses import LOSSES

    if loss_cfg.name not in LOSSES:
        raise RankrmError(f"loss.name must be one of {', '.join(sorted(LOSSES))}, got {loss_cfg.name!r}")
    kwargs = OmegaConf.to_container(loss_cfg.get("kwargs") or {}, resolve=True)
    try:
        LOSSES[loss_cfg.name](
            torch.zeros(1, 2), torch.tensor([[1.0, 0.0]]), torch.ones(1, 2, dtype=torch.bool), **kwargs
        )
    except TypeError as e:  # an unknown kwarg or a value of the wrong type (bad values raise RankrmError)
        raise RankrmError(f"loss.kwargs for loss {loss_cfg.name!r}: {e}") from None


def check_optimizer(cfg: DictConfig) -> None:
    """Build the optimizer and schedule once over a dummy parameter: torch checks its hyperparameters
    (lr, betas, weight_decay...) in the constructor, so a bad value fails here, not inside `fit`."""
    import torch

    try:
        optimizer = hydra.utils.instantiate(cfg.optimizer)(params=[torch.zeros(1, requires_grad=True)])
        if cfg.get("scheduler"):
            hydra.utils.instantiate(cfg.scheduler)(optimizer=optimizer, total_steps=10)
    except (TypeError, ValueError, InstantiationException) as e:  # the last: e.g. a _target_ that does not exist
        raise RankrmError(f"optimizer/scheduler config: {' '.join(str(e).split())}") from None


def check_trainer(cfg: DictConfig) -> None:
    """A GPU trainer where torch sees no GPU, checked before Lightning starts (the trainer's own rules,
    FSDP on CPU or with export, are the schema's)."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RankrmError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'}): use trainer=cpu, or trainer=ddp for "
            "several CPU processes"
        )


def check_export(cfg: DictConfig) -> None:
    """export=true with a pooling or head that transformers cannot hold fails now, not after training."""
    if not cfg.get("export"):
        return
    from rankrm.export import check_exportable_head

    try:
        check_exportable_head(str(cfg.backbone.pooling), bool(cfg.backbone.head_bias))
    except RankrmError as e:
        raise RankrmError(f"export=true: {e}; or set export=false (the checkpoints are still written)") from None


def _read_data(cfg: DictConfig) -> Any:
    """Validate every record now, streamed (no tokenizer needed; skipped for content validated before)."""
    from rankrm.data.cache import check_source

    if cfg.data.get("source") is None:
        raise RankrmError("data.source is missing: pick a data config (data=jsonl, data=vader, ...)")
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    skip = bool(cfg.data.get("skip_invalid", False))
    return check_source(source, int(cfg.seed), skip, cfg.data.cache_dir, bool(cfg.data.cache))


def _resume_path(cfg: DictConfig) -> str | None:
    if not cfg.resume:
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RankrmError(f"resume=true but {last} does not exist: pass the old run's hydra.run.dir")
    return str(last)


def preflight(cfg: DictConfig) -> tuple[Any, str | None]:
    """Every check that needs no model, cheapest first, reading the data (the slowest) last;
    returns (the data read, the checkpoint to resume)."""
    check_config(cfg)
    ckpt_path = _resume_path(cfg)
    check_loss(cfg.loss)  # these import torch
    check_optimizer(cfg)
    check_trainer(cfg)
    check_export(cfg)
    return _read_data(cfg), ckpt_path
