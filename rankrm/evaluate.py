"""Evaluate a reward model: `python -m rankrm.evaluate MODEL --data SPEC [--data SPEC ...] --out DIR`.

MODEL: a rankrm export dir, run dir or `.ckpt`, any local `AutoModelForSequenceClassification` dir
with one label, or a hub id (`rankrm.evaluation.scorer`). SPEC: `vader`, `jsonl:lists.jsonl`,
`rewardbench:rb.jsonl`, `rewardbench2:rb2.parquet`, ... (`rankrm.evaluation.specs`).
Writes DIR/results.json, DIR/scores.jsonl, DIR/report.md and DIR/figures/ (`rankrm/evaluation/README.md`).
Every data spec is read and checked before the model loads, so bad data fails in seconds.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rankrm.errors import exit_on_user_error


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="rankrm-evaluate", description="Evaluate a reward model on ranked data.")
    ap.add_argument("model", metavar="MODEL", help="export dir, run dir, .ckpt, transformers RM dir or hub id")
    ap.add_argument("--data", metavar="SPEC", action="append", required=True, help="data to score (repeatable)")
    ap.add_argument("--out", metavar="DIR", required=True, help="output folder")
    ap.add_argument("--batch-size", type=int, default=32, help="sequences per forward pass (default 32)")
    ap.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    ap.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    ap.add_argument("--seed", type=int, default=0, help="bootstrap seed, and the split seed of data configs")
    ap.add_argument("--bins", type=int, default=10, help="calibration bins, even (ECE, reliability diagram)")
    ap.add_argument("--device", default="auto", help="auto (cuda if there is one), cpu, cuda, cuda:1, ...")
    ap.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16"], help="auto: bf16 on GPU")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None, help="default: on a TTY")
    args = ap.parse_args(argv)
    for name in ("batch_size", "bootstrap", "bins"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if args.bins % 2:
        ap.error("--bins must be even (0.5 on a bin edge keeps a pair's two orders apart)")
    if len(set(args.data)) != len(args.data):
        ap.error("a --data SPEC is given twice")
    return args


@exit_on_user_error
def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    from rankrm.evaluation import run, scorer, specs

    parsed = [specs.parse(s) for s in args.data]
    sets = [specs.load(s, args.seed) for s in parsed]
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rm = scorer.load(args.model, args.device, args.dtype)
    settings = {"bootstrap": args.bootstrap, "seed": args.seed, "bins": args.bins}
    kw = {"batch_size": args.batch_size, "max_length": args.max_length, "progress": args.progress}
    results = run.evaluate(rm, sets, Path(args.out), settings, name=args.model, **kw)
    for spec, e in results.items():
        m, lb, cal = e["metrics"], e["length_bias"], e["calibration"]
        rb = f", RewardBench score {e['rewardbench']['score']:.4f}" if "rewardbench" in e else ""
        print(
            f"{spec}: {m['n_lists']:.0f} lists, pair acc {m['pair_acc']:.4f}{rb}; Spearman(reward, length) "
            f"{_f(lb['spearman_mean'])}; ECE {_f(cal['ece_before'])} -> {_f(cal['ece_after'])} "
            f"(T={cal['temperature']:.3g})"
        )
    print(f"wrote {Path(args.out) / 'report.md'}")


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


if __name__ == "__main__":
    main()
