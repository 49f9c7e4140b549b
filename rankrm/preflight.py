"""Checks that need no model, run before Lightning / transformers load: a typo or a bad data line
fails in about a second with one message naming the key (and rule) or the file, line and field."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rankrm.errors import RankrmError

Check = tuple[str, Callable[[Any], bool]]  # (what the value must be, test)


def _int(lo: int, null: bool = False) -> Check:
    return (
        ("null or " if null else "") + f"an integer >= {lo}",
        lambda v: (null and v is None) or (isinstance(v, int) and not isinstance(v, bool) and v >= lo),
    )


def _num(lo: float, hi: float | None = None, null: bool = False) -> Check:
    what = f"a number in [{lo}, {hi}]" if hi is not None else f"a number >= {lo}"
    return (
        ("null or " if null else "") + what,
        lambda v: (
            (null and v is None)
            or (isinstance(v, (int, float)) and not isinstance(v, bool) and lo <= v <= (hi if hi is not None else v))
        ),
    )


_BOOL: Check = ("true or false", lambda v: isinstance(v, bool))
_DETERMINISTIC: Check = ("true, false or warn", lambda v: isinstance(v, bool) or v == "warn")
_BATCHES: Check = (
    "null, a fraction in [0, 1] or a number of batches >= 0",
    lambda v: (
        v is None
        or (isinstance(v, int) and not isinstance(v, bool) and v >= 0)
        or (isinstance(v, float) and 0 <= v <= 1)
    ),
)
# Config values checked before anything is built (keys absent from the config are skipped).
CHECKS: dict[str, Check] = {
    "seed": _int(0),
    "threads": _int(1, null=True),
    "resume": _BOOL,
    "test": _BOOL,
    "export": _BOOL,
    "trainer.max_epochs": _int(-1, null=True),
    "trainer.max_steps": _int(-1),
    "trainer.accumulate_grad_batches": _int(1),
    "trainer.log_every_n_steps": _int(1),
    "trainer.check_val_every_n_epoch": _int(1, null=True),
    "trainer.num_sanity_val_steps": _int(-1),
    "trainer.gradient_clip_val": _num(0, null=True),
    "trainer.deterministic": _DETERMINISTIC,
    "trainer.limit_train_batches": _BATCHES,
    "trainer.limit_val_batches": _BATCHES,
    "trainer.limit_test_batches": _BATCHES,
    "data.batch_size": _int(1),
    "data.max_tokens": _int(1, null=True),
    "data.max_length": _int(1, null=True),
    "data.num_workers": _int(0),
    "data.skip_invalid": _BOOL,
    "data.length_grouping": _BOOL,
    "data.as_pairs": _BOOL,
    "data.limit_train": _int(1, null=True),
    "data.limit_val": _int(1, null=True),
    "data.limit_test": _int(1, null=True),
    "optimizer.lr": _num(0),
    "scheduler.warmup_ratio": _num(0, 1),
}


def check_config(cfg: DictConfig) -> None:
    """Raise RankrmError for the first value of CHECKS with a wrong type or range, naming key and rule."""
    for key, (what, ok) in CHECKS.items():
        value = OmegaConf.select(cfg, key, default=KeyError)
        if value is not KeyError and not ok(value):
            raise RankrmError(f"{key}={value!r} is invalid: it must be {what}")
    metrics = cfg.get("metric_cutoffs") or []
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in metrics):
        raise RankrmError(f"metric_cutoffs={list(metrics)} is invalid: it must be a list of integers >= 1")


def check_loss(loss_cfg: DictConfig) -> None:
    """The loss name and kwargs, tried on a one-list batch: a bad kwarg fails here, not at step 1."""
    import torch

    from rankrm.losses import LOSSES

    if loss_cfg.name not in LOSSES:
        raise RankrmError(f"loss.name={loss_cfg.name!r} is unknown; choices: {', '.join(sorted(LOSSES))}")
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
        raise RankrmError(f"optimizer/scheduler config: {e}") from None


def check_trainer(cfg: DictConfig) -> None:
    """What the trainer config asks of the machine and of rankrm, checked before Lightning starts:
    a GPU trainer where torch sees no GPU, FSDP on CPU (Lightning refuses it), and export under FSDP."""
    import torch

    trainer = cfg.trainer
    accelerator, strategy = str(trainer.get("accelerator", "auto")), str(trainer.get("strategy", "auto"))
    if strategy.startswith("fsdp") and cfg.get("export"):
        # Under FSDP every rank holds a shard; rank 0 alone cannot read the weights (state_dict() is a
        # collective there), so exporting would hang. Gathering is not implemented (no GPU to test it on).
        raise RankrmError(
            "export=true is not supported with trainer.strategy=fsdp (the weights are sharded "
            "across ranks): set export=false; the checkpoints are still written"
        )
    if strategy.startswith("fsdp") and accelerator == "cpu":
        raise RankrmError(
            "trainer.strategy=fsdp runs on GPUs only (Lightning refuses FSDP on CPU): "
            "use trainer=ddp for several CPU processes"
        )
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RankrmError(
            f"trainer.accelerator={accelerator} but torch sees no CUDA GPU (torch {torch.__version__}, "
            f"CUDA build: {torch.version.cuda or 'none'}): use trainer=cpu, or trainer=ddp for "
            "several CPU processes"
        )


def _read_data(cfg: DictConfig) -> Any:
    """Validate every record now, streamed (no tokenizer needed; skipped for content validated before)."""
    from rankrm.data.cache import check_source

    if cfg.data.get("source") is None:
        raise RankrmError("data.source is missing: pick a data config (data=jsonl, data=vader, ...)")
    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    skip = bool(cfg.data.get("skip_invalid", False))
    return check_source(source, int(cfg.seed), skip, cfg.data.get("cache_dir"))


def _resume_path(cfg: DictConfig) -> str | None:
    if not cfg.resume:
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RankrmError(f"resume=true but {last} does not exist: pass the old run's hydra.run.dir")
    return str(last)


def preflight(cfg: DictConfig) -> tuple[Any, str | None]:
    """Every check that needs no model, cheapest first; returns (the data read, the checkpoint to resume)."""
    check_config(cfg)
    ckpt_path = _resume_path(cfg)
    data = _read_data(cfg)
    check_loss(cfg.loss)  # these import torch (the schedule: Lightning)
    check_optimizer(cfg)
    check_trainer(cfg)
    return data, ckpt_path
