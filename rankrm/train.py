"""Train a reward model on ranked lists: `python -m rankrm.train [group=option ...] [key=value ...]`.

Glue only: data, model, module, trainer are built from the Hydra config; the result is
`<run dir>/metrics.json`, checkpoints, and `<run dir>/model/` (a transformers export).
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # tokenizer threads fight torch's on small CPUs

import hydra
import torch
from omegaconf import DictConfig, OmegaConf

from rankrm.errors import RankrmError
from rankrm.io import atomic_write_json

log = logging.getLogger("rankrm")


class _DropNoise(logging.Filter):
    """Lightning advertises a cloud logger at every start; keep the console to what the run did."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "litlogger" not in record.getMessage()


def _quiet_logging() -> None:
    # Lightning has its own console handler; without this Hydra's root handler prints each line twice.
    for name in ("lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        logger.propagate = False
        for h in logger.handlers:
            h.addFilter(_DropNoise())
    warnings.filterwarnings("ignore", message=".*treespec.*")  # lightning 2.6 vs torch 2.13 deprecation


def _instantiate_dict(group: DictConfig | None) -> list[Any]:
    """Callbacks / loggers: a dict of name -> config; null entries switch one off."""
    return [hydra.utils.instantiate(c) for c in (group or {}).values() if c is not None]


def _resume_path(cfg: DictConfig) -> str | None:
    if not cfg.resume:
        return None
    last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    if not last.is_file():
        raise RankrmError(f"resume=true but {last} does not exist: pass the old run's hydra.run.dir")
    return str(last)


def load_weights(module: torch.nn.Module, ckpt_path: str) -> None:
    """Load a Lightning checkpoint's weights safely (no pickled code is executed)."""
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    module.load_state_dict(state["state_dict"])


def _final_metrics(trainer: Any, module: Any, dm: Any, cfg: DictConfig) -> dict[str, Any]:
    """Validate (and test) the best checkpoint; returns {"val": {...}, "test": {...}}."""
    ckpt = trainer.checkpoint_callback
    best = ckpt.best_model_path if ckpt is not None else ""
    if best:
        load_weights(module, best)
    out: dict[str, Any] = {"best_checkpoint": best or None}
    stages = [("val", trainer.validate)] + ([("test", trainer.test)] if cfg.test else [])
    for stage, run in stages:
        results = run(module, datamodule=dm, verbose=stage == "test")
        out[stage] = {k.split("/", 1)[1]: float(v) for k, v in results[0].items() if k.startswith(stage)}
    return out


@torch.no_grad()
def reference_stats(module: Any, loader: Any) -> tuple[float, float]:
    """Mean and std of the model's scores over a reference set (for reward normalisation)."""
    module.eval()
    scores = [module.model(b["input_ids"], b["attention_mask"], b.get("token_type_ids")) for b in loader]
    s = torch.cat(scores).float()  # (N_total,)
    return s.mean().item(), s.std().clamp_min(1e-6).item()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Train, evaluate and export one reward model; returns the content of metrics.json."""
    import lightning.pytorch as pl  # heavy imports after config errors had their chance

    from rankrm.backbones import build_reward_model
    from rankrm.module import RankRMModule

    start = time.time()
    _quiet_logging()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    out_dir = Path(cfg.paths.output_dir)

    model, tokenizer = build_reward_model(cfg.backbone)
    dm = hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    module = RankRMModule(model, cfg.loss.name, OmegaConf.to_container(cfg.loss.get("kwargs") or {}),
                          optimizer=hydra.utils.instantiate(cfg.optimizer),
                          scheduler=hydra.utils.instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
                          metric_cutoffs=tuple(cfg.metric_cutoffs))
    n_all = sum(p.numel() for p in module.parameters())
    n_train = sum(p.numel() for p in module.parameters() if p.requires_grad)
    log.info("parameters: %s total, %s trainable (%s)", f"{n_all:,}", f"{n_train:,}", cfg.backbone.freeze)

    trainer = hydra.utils.instantiate(cfg.trainer, callbacks=_instantiate_dict(cfg.get("callbacks")),
                                      logger=_instantiate_dict(cfg.get("logger")) or False,
                                      default_root_dir=str(out_dir))
    trainer.fit(module, datamodule=dm, ckpt_path=_resume_path(cfg))
    metrics = _final_metrics(trainer, module, dm, cfg)

    if cfg.backbone.get("normalize_rewards"):
        mean, std = reference_stats(module, dm.val_dataloader())
        module.model.set_reward_norm(mean, std)
        metrics["reward_norm"] = {"mean": mean, "std": std, "reference": "val"}
    metrics.update(
        data=getattr(dm, "stats", {}), params={"total": n_all, "trainable": n_train},
        train={"global_steps": trainer.global_step, "epochs": trainer.current_epoch,
               "sequences_encoded": int(module.sequences_encoded)},
        wall_time_s=round(time.time() - start, 2))
    if trainer.is_global_zero:
        metrics["export"] = _export(cfg, module, tokenizer, out_dir)
        atomic_write_json(out_dir / "metrics.json", metrics)
        log.info("wrote %s", out_dir / "metrics.json")
    return metrics


def _export(cfg: DictConfig, module: Any, tokenizer: Any, out_dir: Path) -> str | None:
    """Export to <run dir>/model; an unsupported pooling is reported, not fatal: the checkpoint stays."""
    if not cfg.export:
        return None
    from rankrm.export import export_model

    try:
        return str(export_model(module.model, tokenizer, out_dir / "model"))
    except RankrmError as e:
        log.warning("export skipped: %s", e)
        return f"skipped: {e}"


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    try:
        metrics = train(cfg)
    except RankrmError as e:
        print(f"rankrm: error: {e}", file=sys.stderr)
        sys.exit(2)
    return metrics.get("val", {}).get("pair_acc")


if __name__ == "__main__":
    main()
