"""Train a reward model on ranked lists: `python -m rankrm.train [group=option ...] [key=value ...]`.

Glue only. `rankrm.preflight` first runs the cheap checks (config values, resume checkpoint, every
data record, loss, optimizer) before Lightning / transformers load, so a typo or a bad line fails in
about a second. Then data, model, module and trainer are built from the Hydra config. The result is
`<run dir>/metrics.json`, checkpoints, and `<run dir>/model/` (a transformers export), written once
(rank 0) and atomically.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizer threads fight torch's on small CPUs

import hydra
from hydra.errors import InstantiationException
from omegaconf import DictConfig, OmegaConf

from rankrm.config.cli import hydra_runner
from rankrm.errors import RankrmError
from rankrm.io import atomic_write_json
from rankrm.preflight import preflight

log = logging.getLogger("rankrm")


def _build(node: Any, group: str, **kwargs: Any) -> Any:
    """`hydra.utils.instantiate` for a config group: a constructor refusing its arguments is a config error."""
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        return hydra.utils.instantiate(node, **kwargs)
    except InstantiationException as e:
        cause = e.__cause__
        if isinstance(cause, RankrmError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError, MisconfigurationException)) or cause is None:
            raise RankrmError(f"{group}: {cause or e}") from None
        raise


def _build_dict(group: DictConfig | None, name: str) -> list[Any]:
    """Callbacks / loggers: a dict of name -> config; null entries switch one off."""
    return [_build(c, f"{name}.{k}") for k, c in (group or {}).items() if c is not None]


def _quiet_logging() -> None:
    # Lightning has its own console handler; without this Hydra's root handler prints each line twice.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.propagate = False
        for h in logger.handlers:
            h.addFilter(lambda r: "litlogger" not in r.getMessage())  # the cloud-logger advert at every start
    warnings.filterwarnings("ignore", message=".*treespec.*")  # lightning 2.6 vs torch 2.13 deprecation


def _final_metrics(trainer: Any, module: Any, dm: Any, cfg: DictConfig) -> dict[str, Any]:
    """Validate (and test) the best checkpoint; returns {"val": {...}, "test": {...}}."""
    from rankrm.module import load_weights

    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None else ""
    if best:
        load_weights(module, best)
    out: dict[str, Any] = {"best_checkpoint": best or None}
    stages = [("val", trainer.validate)] + ([("test", trainer.test)] if cfg.test else [])
    for stage, run in stages:
        results = run(module, datamodule=dm, verbose=stage == "test")
        if not results:  # an empty split gives Lightning nothing to report
            raise RankrmError(f"the {stage} split has no lists: check the data source and limits")
        out[stage] = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(stage)}
    return out


def _trainer(cfg: DictConfig, out_dir: Path) -> Any:
    import lightning.pytorch as pl

    from rankrm.module import AtomicCheckpointIO

    callbacks = _build_dict(cfg.get("callbacks"), "callbacks")
    if not cfg.trainer.get("enable_checkpointing", True):  # Lightning would refuse the checkpoint callbacks
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.ModelCheckpoint)]
    return _build(
        cfg.trainer,
        "trainer",
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        logger=_build_dict(cfg.get("logger"), "logger") or False,
        default_root_dir=str(out_dir),
    )


# What gloo / NCCL say in the surviving ranks' next collective when a peer process has died.
PEER_LOST = ("Connection reset by peer", "Connection closed by peer", "Broken pipe", "NCCL communicator was aborted")


def _ended_ranks(procs: list[Any], wait_s: float = 10.0) -> list[tuple[int, int]]:
    """(local rank, exit code) of the ranks rank 0 launched (Lightning's subprocess launcher) that have ended.
    The peer's error can reach this rank before the peer's exit does: wait for it a little."""
    deadline = time.monotonic() + wait_s
    while True:
        ended = [(i + 1, p.returncode) for i, p in enumerate(procs) if p.poll() is not None]
        if ended or not procs or time.monotonic() > deadline:
            return ended
        time.sleep(0.1)


@contextmanager
def _peer_loss_is_one_line(trainer: Any, out_dir: Path) -> Iterator[None]:
    """A DDP rank that dies (killed, out of memory) makes the others fail in their next collective with a
    long traceback: say instead which rank was lost and how to continue."""
    try:
        yield
    except RuntimeError as e:
        if trainer.world_size < 2 or not any(s in str(e) for s in PEER_LOST):
            raise
        ended = _ended_ranks(getattr(trainer.strategy.launcher, "procs", None) or [])
        if ended:
            rank, code = ended[0]
            how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
            lost = f"DDP rank {rank} was lost ({how})"
        else:
            other = f"rank {1 - trainer.global_rank}" if trainer.world_size == 2 else "another rank"
            lost = f"DDP {other} was lost (its process ended; see its log)"
        last = out_dir / "checkpoints" / "last.ckpt"
        then = (
            f"run the same command with resume=true (same hydra.run.dir) to continue from {last}"
            if last.is_file()
            else "no checkpoint was written yet: run the command again "
            "(callbacks.step_checkpoint.every_n_train_steps=N writes one every N steps)"
        )
        raise RankrmError(f"{lost}, so rank {trainer.global_rank} stopped too: {then}") from None


def _reward_stats(module: Any, dm: Any, normalize: bool) -> dict[str, Any]:
    """Mean and std of the model's raw scores over all of val (the same on every rank), recorded with the
    export for RL; with backbone.normalize_rewards they become the model's norm (mean 0, std 1 on val)."""
    from torch.utils.data import DataLoader

    from rankrm.module import reference_stats

    val = DataLoader(dm.datasets["val"], batch_sampler=dm.sampler("val"), collate_fn=dm.collator)
    mean, std = reference_stats(module, val)
    if normalize:
        module.model.set_reward_norm(mean, std)
    return {"split": "val", "n": sum(e.k for e in dm.datasets["val"]), "mean": mean, "std": std}


def _module(cfg: DictConfig, model: Any) -> tuple[Any, dict[str, int]]:
    """The LightningModule around `model`, and its parameter counts (logged)."""
    from rankrm.module import RankRMModule

    module = RankRMModule(
        model,
        cfg.loss.name,
        OmegaConf.to_container(cfg.loss.get("kwargs") or {}),
        optimizer=hydra.utils.instantiate(cfg.optimizer),
        scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
        metric_cutoffs=tuple(cfg.metric_cutoffs),
    )
    n_all = sum(p.numel() for p in module.parameters())
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info("parameters: %s total, %s trainable (%s)", f"{n_all:,}", f"{n_train:,}", cfg.backbone.freeze)
    return module, {"total": n_all, "trainable": n_train}


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and export one reward model; returns the content of metrics.json."""
    start = time.time()
    data, ckpt_path = preflight(cfg)

    import lightning.pytorch as pl  # heavy imports after config and data errors had their chance
    import torch

    from rankrm.backbones import build_reward_model

    _quiet_logging()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = Path(cfg.paths.output_dir)

    model, tokenizer = build_reward_model(cfg.backbone)
    if cfg.export:  # what only the built model tells (e.g. a model type transformers has no head class for)
        from rankrm.export import check_exportable

        check_exportable(model)
    dm = _build(cfg.data, "data", tokenizer=tokenizer, seed=cfg.seed, preread=data)
    dm.setup("fit")  # tokenise now: a data set emptied by the length filter fails before the trainer starts
    module, params = _module(cfg, model)

    trainer = _trainer(cfg, out_dir)
    with _peer_loss_is_one_line(trainer, out_dir):
        trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path, weights_only=True)  # resume without unpickling code
        encoded = int(module.sequences_encoded)  # global count (summed over ranks); read before the best weights load
        metrics = _final_metrics(trainer, module, dm, cfg)
    normalize = bool(cfg.backbone.get("normalize_rewards"))
    if cfg.export or normalize:  # one more pass over val; the export records the scale for RL
        metrics["reward_stats"] = _reward_stats(module, dm, normalize)
    if normalize:
        metrics["reward_norm"] = {k: metrics["reward_stats"][k] for k in ("mean", "std")} | {"reference": "val"}
    metrics.update(
        data=dm.stats,
        params=params,
        train={
            "global_steps": trainer.global_step,
            "epochs": trainer.current_epoch,
            "sequences_encoded": encoded,
            "world_size": trainer.world_size,
        },
        wall_time_s=round(time.time() - start, 2),
    )
    if trainer.is_global_zero:
        metrics["export"] = _export(cfg, module, tokenizer, dm, metrics, out_dir)
        from rankrm.evaluation.run import test_report  # issue 16: RewardBench-style report of the test split

        metrics["test_report"] = test_report(cfg, module.model, tokenizer, dm.input_format, out_dir)
        atomic_write_json(out_dir / "metrics.json", metrics)
        log.info("wrote %s", out_dir / "metrics.json")
    return metrics


def _export(
    cfg: DictConfig, module: Any, tokenizer: Any, dm: Any, metrics: dict[str, Any], out_dir: Path
) -> str | None:
    """Export to <run dir>/model; an unsupported pooling is reported, not fatal: the checkpoint stays."""
    if not cfg.export:
        return None
    from rankrm.export import export_model
    from rankrm.export.card import run_summary

    try:
        run = run_summary(cfg, metrics) | {"loss": module.loss_metadata()}  # learned loss parameters too
        return str(export_model(module.model, tokenizer, out_dir / "model", dm.input_format, run))
    except RankrmError as e:
        log.warning("export skipped: %s", e)
        return f"skipped: {e}"


def _task(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except RankrmError as e:
        print(f"rankrm: error: {e}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("val", {}).get("pair_acc")


main = hydra_runner(_task, "train")  # the command line is checked first: a bad key or option is one line too


if __name__ == "__main__":
    main()
