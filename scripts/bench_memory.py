"""Peak memory and step time of a training step, gradient checkpointing off vs on.

Each setting runs in its own process, so its peak RSS (VmHWM) is its own: build the backbone from
`conf/backbone/<name>.yaml` as `rankrm.train` does, make one batch of `--lists` lists of K
responses, each `--max-length` random tokens with no padding (the worst case a data.max_length
allows), then run `--steps` steps of forward + `ranklist` loss + backward + fused AdamW on it. The
peak RSS is read after building the model (`setup_rss_mb`; AdamW allocates its moments in the first
step) and after the steps (`peak_rss_mb`, that process's whole peak); the step time is the median
over the steps after the first (the first allocates). Loading, data and checkpoint writing are
outside the timed steps.

The setting that made this script (ablation 8's SmolLM2 arm, ~14 GB a run: two could not share
this 24 GB machine):

    python scripts/bench_memory.py --backbone smollm2 --lists 8 --k 4 --max-length 192 --threads 2 --steps 4

Smoke (tests): `python scripts/bench_memory.py --quick --backbone tiny_qwen`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# sibling modules: `python scripts/x.py` puts scripts/ on the path
import bench_common as bc
import bench_measure as bm

COLUMNS = [
    ("gradient_checkpointing", "gradient checkpointing"),
    ("sequences", "sequences x tokens"),
    ("setup_rss_mb", "peak RSS after setup MB"),
    ("peak_rss_mb", "peak RSS MB"),
    ("step_s", "step s (median)"),
    ("loss_first", "loss, step 1"),
    ("loss_last", "loss, last step"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bc.parser(__doc__, "backbone threads seed out workdir k", max_length=(128, "tokens per response (all real)"))
    p.add_argument("--lists", type=int, default=8, help="lists per batch (data.batch_size)")
    p.add_argument("--steps", type=int, default=4, help="training steps on the batch (>= 2)")
    args = p.parse_args(argv)
    if args.quick:
        args.lists, args.k, args.max_length, args.steps = 2, 3, 16, 2
    if args.steps < 2:
        p.error("--steps must be >= 2 (the first step is not timed)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_memory_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = bc.machine_info(args.threads)
    rows = []
    for ckpt in (False, True):
        spec = {
            "name": f"ckpt_{str(ckpt).lower()}",
            "backbone": args.backbone,
            "lists": args.lists,
            "k": args.k,
            "max_length": args.max_length,
            "steps": args.steps,
            "threads": args.threads,
            "seed": args.seed,
            "gradient_checkpointing": ckpt,
        }
        row = bc.run_worker("bench_memory:train_steps", spec, workdir, args.threads)
        rows.append(
            {
                **row,
                "gradient_checkpointing": "on" if ckpt else "off",
                "sequences": f"{args.lists * args.k} x {args.max_length}",
            }
        )
    off, on = rows
    ratio = {
        "peak_rss_on_over_off": on["peak_rss_mb"] / off["peak_rss_mb"],
        "step_on_over_off": on["step_s"] / off["step_s"],
    }
    md = "\n\n".join(
        [
            f"## One training step, gradient checkpointing off vs on ({args.backbone}, {args.lists} lists "
            f"x K={args.k}, {args.max_length} tokens each, {args.threads} threads, median of "
            f"{args.steps - 1} steps)",
            bc.markdown_table(rows, COLUMNS),
            f"on / off: peak RSS {ratio['peak_rss_on_over_off']:.2f}x, step time {ratio['step_on_over_off']:.2f}x",
            bc.load_line(info),
        ]
    )
    bc.write_report(args.out, {"args": vars(args), "machine": info, "rows": rows, **ratio}, md)
    return 0


def train_steps(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the model as rankrm.train does, then time `steps` steps on one full-length batch."""
    import torch

    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.losses import LOSSES

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(spec["seed"])
    cfg = load_option("backbone", spec["backbone"])
    cfg.gradient_checkpointing = spec["gradient_checkpointing"]
    model, tokenizer = build_reward_model(cfg)
    model.train()
    n, t = spec["lists"] * spec["k"], spec["max_length"]
    input_ids = torch.randint(0, len(tokenizer), (n, t))  # (lists * K, T): random ids, no padding
    mask = torch.ones_like(input_ids)
    labels = torch.arange(spec["k"], 0, -1, dtype=torch.float32).repeat(spec["lists"], 1)  # (lists, K), best first
    list_mask = torch.ones_like(labels, dtype=torch.bool)  # (lists, K)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5, fused=True)
    setup_rss = bm.vm_hwm_mb()
    times, losses = [], []
    for _ in range(spec["steps"]):
        start = time.perf_counter()
        scores = model(input_ids, mask).view(spec["lists"], spec["k"])  # (lists * K,) -> (lists, K)
        loss = LOSSES["ranklist"](scores, labels, list_mask)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
        losses.append(float(loss))
    return {
        "setup_rss_mb": round(setup_rss, 1),
        "step_s": statistics.median(times[1:]),
        "loss_first": round(losses[0], 4),
        "loss_last": round(losses[-1], 4),
    }


if __name__ == "__main__":
    sys.exit(main())
