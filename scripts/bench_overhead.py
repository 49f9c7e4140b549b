"""How close rankrm's training step is to the bare minimum, in one process.

1. Framework overhead: one epoch of `RankRMModule` under a Lightning `Trainer` (the CLI's
   trainer config, progress bar, logger and checkpoints off) vs the bare loop on the same model
   state and the same pre-collated batches: forward, loss, backward, grad clip, AdamW, schedule.
   Goal: Lightning / bare <= 1.15.
2. Padding: padded-token share of one epoch with `data.length_grouping=true` vs random batches,
   and the val pair accuracy / Kendall tau of an epoch trained on each (goal: accuracy unchanged).
3. Loss + metrics share: inside bare steps, the time of the loss forward and of a metrics update
   (`RankingMetrics.update`, what a validation step adds) over the whole step time, for every
   loss in `rankrm.losses.LOSSES`. Goal: <= 2%.

Batches are collated once up front, so both loops see identical tensors and collation is in
neither. A few bare warm-up steps run first (the first steps of a process are slow); the two
loops alternate order across repeats, and medians are reported.

Full size (a quiet machine, ~10 min on 2 cores):

    python scripts/bench_overhead.py --k 4 --train-lists 400 --val-lists 200 --lists-per-batch 8 \
        --threads 2 --repeats 3 --out bench_overhead.json

Smoke (tests): `python scripts/bench_overhead.py --quick --backbone tiny_bert --vader-dir DIR`.
"""

from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# sibling modules: `python scripts/x.py` puts scripts/ on the path
import bench_common as bc
import bench_measure as bm

from rankrm import CONF_DIR


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bc.parser(__doc__, f"{bc.VADER_OPTIONS} k lists_per_batch threads loss repeats val_lists")
    p.add_argument("--warmup-steps", type=int, default=3, help="untimed bare steps before timing")
    args = p.parse_args(argv)
    if args.quick:
        args.k, args.train_lists, args.val_lists, args.lists_per_batch = 3, 8, 4, 2
        args.repeats, args.warmup_steps = 1, 1
    return args


def compose(args: argparse.Namespace, lists: dict[str, str], extra: list[str] = ()) -> Any:
    """The runner's own config (conf/train.yaml) with this benchmark's data and sizes."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        *bc.data_overrides(args.backbone, args.loss, lists, args.seed, args.lists_per_batch, args.max_length),
        # No dropout: both loops then compute the same function, whatever mode a module is in.
        "backbone.dropout=0.0",
        *extra,
    ]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def train_batches(cfg: Any, tokenizer: Any) -> tuple[Any, list[dict]]:
    """(data module after setup, one epoch of collated train batches), as the runner's data."""
    from hydra.utils import instantiate

    dm = instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)
    dm.setup("fit")
    return dm, list(dm.train_dataloader())


def make_module(cfg: Any, model0: Any) -> Any:
    """A RankRMModule around a fresh copy of the initial model, as `rankrm.train.train` builds it."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from rankrm.module import RankRMModule

    return RankRMModule(
        copy.deepcopy(model0),
        cfg.loss.name,
        OmegaConf.to_container(cfg.loss.get("kwargs") or {}),
        optimizer=instantiate(cfg.optimizer),
        scheduler=instantiate(cfg.scheduler) if cfg.get("scheduler") else None,
    )


def bare_epoch(module: Any, batches: list[dict], clip: float | None, timers: dict | None = None) -> float:
    """The minimum a training epoch needs; returns seconds. `timers` gets per-part times."""
    import torch

    from rankrm.metrics import RankingMetrics

    params = [p for p in module.parameters() if p.requires_grad]
    opt = module.optimizer_factory(params=params)
    sched = module.scheduler_factory(optimizer=opt, total_steps=len(batches)) if module.scheduler_factory else None
    metrics = RankingMetrics()
    module.train()
    start = time.perf_counter()
    for batch in batches:
        t0 = time.perf_counter()
        rewards = module(batch)  # (B, K)
        t1 = time.perf_counter()
        loss = module.loss(rewards.float(), batch["labels"], batch["mask"], **module.loss_kwargs)
        t2 = time.perf_counter()
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        if timers is not None:  # a validation step's metric update, timed apart from the step
            metrics.update(rewards.detach().float(), batch["labels"], batch["mask"])
            t4 = time.perf_counter()
            for key, dt in (
                ("forward", t1 - t0),
                ("loss", t2 - t1),
                ("backward_opt", t3 - t2),
                ("metrics", t4 - t3),
                ("step", t3 - t0),
            ):
                timers.setdefault(key, []).append(dt)
    return time.perf_counter() - start


def lightning_epoch(cfg: Any, module: Any, batches: list[dict]) -> tuple[float, float]:
    """(trainer.fit seconds, train-loop seconds) for one epoch over `batches`."""
    import lightning.pytorch as pl
    from hydra.utils import instantiate
    from torch.utils.data import DataLoader

    class LoopTimer(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            self.start = time.perf_counter()

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            self.seconds = time.perf_counter() - self.start

    timer = LoopTimer()
    trainer = instantiate(
        cfg.trainer,
        callbacks=[timer],
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        max_epochs=1,
    )
    loader = DataLoader(batches, batch_size=None, shuffle=False)  # pre-collated: yields them as they are
    start = time.perf_counter()
    trainer.fit(module, train_dataloaders=loader)
    return time.perf_counter() - start, timer.seconds


def overhead(args: argparse.Namespace, cfg: Any, model0: Any, batches: list[dict]) -> dict[str, Any]:
    """Median seconds of a bare epoch and of a Lightning epoch (alternating order), and their ratio."""
    clip = cfg.trainer.get("gradient_clip_val")
    bare_epoch(make_module(cfg, model0), batches[: args.warmup_steps], clip)  # warm-up, untimed
    times: dict[str, list[float]] = {"bare_s": [], "lightning_fit_s": [], "lightning_loop_s": []}
    for rep in range(args.repeats):
        for which in ("bare", "lightning") if rep % 2 == 0 else ("lightning", "bare"):
            module = make_module(cfg, model0)
            if which == "bare":
                times["bare_s"].append(bare_epoch(module, batches, clip))
            else:
                fit_s, loop_s = lightning_epoch(cfg, module, batches)
                times["lightning_fit_s"].append(fit_s)
                times["lightning_loop_s"].append(loop_s)
    row: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    row.update(
        steps=len(batches),
        fit_over_bare=row["lightning_fit_s"] / row["bare_s"],
        loop_over_bare=row["lightning_loop_s"] / row["bare_s"],
        runs=times,
    )
    return row


def padding(args: argparse.Namespace, lists: dict[str, str], model0: Any, tokenizer: Any) -> list[dict[str, Any]]:
    """Padded share and val accuracy after one bare epoch, with and without length grouping
    (and the untrained model's accuracy, to show how far one epoch moved it)."""
    val = bm.read_lists(lists["val"])
    untrained = make_module(compose(args, lists), model0).eval()
    m = bm.evaluate_lists(bm.rankrm_val_scorer(untrained, tokenizer, args.max_length), val)
    rows = [{"batching": "untrained (reference)", "val_pair_acc": m["pair_acc"], "val_kendall_tau": m["kendall_tau"]}]
    for grouping in (True, False):
        cfg = compose(args, lists, [f"data.length_grouping={str(grouping).lower()}"])
        dm, batches = train_batches(cfg, tokenizer)
        module = make_module(cfg, model0)
        seconds = bare_epoch(module, batches, cfg.trainer.get("gradient_clip_val"))
        module.eval()
        m = bm.evaluate_lists(bm.rankrm_val_scorer(module, tokenizer, args.max_length), val)
        rows.append(
            {
                "batching": "length-grouped" if grouping else "random",
                "pad_share": dm.stats["train"]["padded_share"],
                "epoch_s": seconds,
                "val_pair_acc": m["pair_acc"],
                "val_kendall_tau": m["kendall_tau"],
            }
        )
    return rows


def step_parts(cfg: Any, model0: Any, batches: list[dict]) -> list[dict[str, Any]]:
    """Median time of each part of a bare step, and of every loss (forward + backward to rewards)."""
    import torch
    from omegaconf import OmegaConf

    from rankrm.losses import LOSSES

    timers: dict[str, list[float]] = {}
    module = make_module(cfg, model0)
    bare_epoch(module, batches, cfg.trainer.get("gradient_clip_val"), timers)
    step = statistics.median(timers["step"])
    rows = [
        {
            "part": part,
            "ms": 1000 * statistics.median(timers[part]),
            "share_of_step": statistics.median(timers[part]) / step,
        }
        for part in ("forward", "loss", "backward_opt", "metrics", "step")
    ]
    module.eval()
    with torch.no_grad():
        grids = [(module(b).float(), b["labels"], b["mask"]) for b in batches]  # (B, K) each
    for name, fn in sorted(LOSSES.items()):
        conf = CONF_DIR / "loss" / f"{name}.yaml"
        kwargs = OmegaConf.to_container(OmegaConf.load(conf).get("kwargs") or {}) if conf.is_file() else {}
        dts = []
        for rewards, labels, mask in grids:
            r = rewards.clone().requires_grad_(True)
            t0 = time.perf_counter()
            fn(r, labels, mask, **kwargs).backward()
            dts.append(time.perf_counter() - t0)
        rows.append(
            {
                "part": f"loss {name} fwd+bwd",
                "ms": 1000 * statistics.median(dts),
                "share_of_step": statistics.median(dts) / step,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from lightning.pytorch import seed_everything
    from omegaconf import OmegaConf

    from rankrm.backbones import build_reward_model

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_overhead_"))
    info = bc.machine_info(args.threads)
    lists = bc.prepare_vader_lists(
        bc.vader_dir(args.vader_dir), args.k, args.train_lists, args.val_lists, args.seed, workdir, args.min_gap
    )
    cfg = compose(args, lists)
    seed_everything(args.seed, verbose=False)
    model0, tokenizer = build_reward_model(cfg.backbone)
    _, batches = train_batches(cfg, tokenizer)
    over = overhead(args, cfg, model0, batches)
    pad = padding(args, lists, model0, tokenizer)
    parts = step_parts(cfg, model0, batches)
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    md = "\n\n".join(
        [
            f"## rankrm overhead ({args.backbone}, loss {args.loss}, K={args.k}, {args.train_lists} lists, "
            f"{args.lists_per_batch} per batch, max_length {args.max_length}, medians of {args.repeats})",
            "Framework overhead (goal: Lightning / bare <= 1.15):",
            bc.markdown_table(
                [over],
                [
                    ("steps", "steps"),
                    ("bare_s", "bare epoch s"),
                    ("lightning_fit_s", "trainer.fit s"),
                    ("lightning_loop_s", "Lightning loop s"),
                    ("fit_over_bare", "fit / bare"),
                    ("loop_over_bare", "loop / bare"),
                ],
            ),
            "Padding (one epoch each; goal: accuracy unchanged):",
            bc.markdown_table(
                pad,
                [
                    ("batching", "batches"),
                    ("pad_share", "padded share"),
                    ("epoch_s", "epoch s"),
                    ("val_pair_acc", "val pair acc"),
                    ("val_kendall_tau", "val Kendall tau"),
                ],
            ),
            "Inside a step (goal: loss + metrics <= 2% of the step):",
            bc.markdown_table(parts, [("part", "part"), ("ms", "median ms"), ("share_of_step", "share of step")]),
            bc.load_line(info) + f"; after: {info['loadavg_after']}",
        ]
    )
    bc.write_report(
        args.out,
        {
            "args": vars(args),
            "machine": info,
            "overhead": over,
            "padding": pad,
            "step_parts": parts,
            "data_config": OmegaConf.to_container(cfg.data),
        },
        md,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
