"""Throughput of data-parallel training on CPU: `python -m rankrm.train trainer=ddp trainer.devices=N`.

Each configuration is one run of the real CLI (Lightning DDP over gloo, one process per
device) on the same VADER lists, with the same GLOBAL batch (data.batch_size = lists per batch
/ N per process) and the machine's cores split between the processes (threads = cores / N).
Single-process `trainer=cpu` runs (all cores; one thread) are the references. Two figures per run:
- `train s`: from Trainer construction to the end of training on rank 0 (includes starting
  the other ranks, which re-import everything, and the gloo rendezvous);
- `loop s`: the training loop only (all ranks up), i.e. steady-state throughput.
Peak RSS is summed over the ranks (each rank reports its own high-water mark).

What to expect on a 2-core machine: little or nothing. Two processes with one thread each
do the same arithmetic as one process with two threads, plus a gradient all-reduce per step
and a second copy of the model, data and Python runtime. DDP pays off with more cores
(or GPUs) than one process can keep busy; this script documents the cost, not a speedup.

Full size (a quiet machine, ~25 min on 2 cores; 4 configurations x 2 repeats):

    python scripts/bench_ddp.py --k 4 --train-lists 400 --lists-per-batch 8 --devices 1 2 \
        --repeats 2 --out bench_ddp.json

Smoke (tests): `python scripts/bench_ddp.py --quick --backbone tiny_bert --vader-dir DIR`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import bench_common as bc  # a sibling module: `python scripts/x.py` puts scripts/ on the path

COLUMNS = [
    ("config", "config"),
    ("processes", "processes"),
    ("threads", "threads/process"),
    ("per_rank_batch", "lists/batch/process"),
    ("lists_per_s", "lists/s (train)"),
    ("loop_lists_per_s", "lists/s (loop)"),
    ("speedup", "x 1 process (loop)"),
    ("train_s", "train s"),
    ("fit_loop_s", "loop s"),
    ("process_wall_s", "process s"),
    ("rss_sum_mb", "peak RSS sum MB"),
    ("steps", "steps"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bc.parser(__doc__, f"{bc.VADER_OPTIONS} k loss repeats", val_lists=16)
    p.add_argument("--lists-per-batch", type=int, default=8, help="GLOBAL batch in lists (split over the processes)")
    p.add_argument("--devices", type=int, nargs="+", default=[1, 2], help="DDP process counts to run")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 1, help="threads shared by the processes")
    args = p.parse_args(argv)
    if args.quick:
        args.k, args.train_lists, args.val_lists, args.lists_per_batch, args.repeats = 3, 8, 4, 2, 1
        args.devices, args.cores = [2], 2  # the single-process reference + one DDP run
    return args


def configs(args: argparse.Namespace) -> list[tuple[str, int, int, list[str]]]:
    """(label, processes, threads per process, trainer overrides).

    References: one process with all cores, and (full runs) one process with one thread, the
    per-process compute of the 2-process DDP run. DDP with N processes gets cores / N threads each.
    """
    out = [(f"trainer=cpu threads={args.cores}", 1, args.cores, ["trainer=cpu"])]
    if args.cores > 1 and not args.quick:
        out.append(("trainer=cpu threads=1", 1, 1, ["trainer=cpu"]))
    for n in args.devices:
        out.append(
            (
                f"trainer=ddp devices={n}",
                n,
                max(1, args.cores // n),
                ["trainer=ddp", "trainer.accelerator=cpu", f"trainer.devices={n}"],
            )
        )
    return out


def run_config(
    args: argparse.Namespace, lists: dict[str, str], config: tuple[str, int, int, list[str]], rep: int, workdir: Path
) -> dict[str, Any]:
    label, n, threads, trainer = config
    if args.lists_per_batch % n:
        raise SystemExit(f"--lists-per-batch {args.lists_per_batch} does not split over {n} processes")
    name = f"{label.replace(' ', '_').replace('=', '')}_r{rep}"
    data = bc.data_overrides(args.backbone, args.loss, lists, args.seed, args.lists_per_batch // n, args.max_length)
    res = bc.run_rankrm_cli(name, [*data, *trainer], workdir, threads)
    ranks = [res] + [json.loads(p.read_text()) for p in sorted(workdir.glob(f"{name}.probe.json.rank*"))]
    res.update(
        config=label,
        processes=n,
        threads=threads,
        per_rank_batch=args.lists_per_batch // n,
        ranks_reporting=len(ranks),
        rss_sum_mb=sum(r["peak_rss_rank_mb"] for r in ranks),
        lists_per_s=res["train_lists"] / res["train_s"],
        loop_lists_per_s=res["train_lists"] / res["fit_loop_s"],
    )
    return res


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_ddp_"))
    info = bc.machine_info(args.cores)
    lists = bc.prepare_vader_lists(
        bc.vader_dir(args.vader_dir),
        args.k,
        args.train_lists,
        args.val_lists,
        args.seed,
        workdir / "lists",
        args.min_gap,
    )
    runs: dict[str, list[dict[str, Any]]] = {}
    for rep in range(args.repeats):
        for config in configs(args):
            runs.setdefault(config[0], []).append(run_config(args, lists, config, rep, workdir))
    rows = [bc.median_runs(r) for r in runs.values()]
    ref = next((r for r in rows if r["config"] == "trainer=ddp devices=1"), rows[0])
    for r in rows:
        r["speedup"] = r["loop_lists_per_s"] / ref["loop_lists_per_s"]
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    md = "\n\n".join(
        [
            f"## rankrm DDP on CPU ({args.backbone}, loss {args.loss}, K={args.k}, {args.train_lists} lists, "
            f"global batch {args.lists_per_batch} lists, {args.cores} cores shared, medians of {args.repeats})",
            bc.markdown_table(rows, COLUMNS),
            "Speedup is against `trainer=ddp devices=1`. On 2 cores expect ~1x or less: two 1-thread "
            "processes do the arithmetic of one 2-thread process, plus an all-reduce per step. On a loaded "
            "machine 2-thread processes stall in OpenMP barriers whenever another process holds a core, "
            "which flatters the 1-thread rows (compare `trainer=cpu threads=1`).",
            bc.load_line(info) + f"; after: {info['loadavg_after']}",
        ]
    )
    bc.write_report(args.out, {"args": vars(args), "machine": info, "rows": rows, "workdir": str(workdir)}, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
