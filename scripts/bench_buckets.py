"""Padding left after length-aware batching, and what `backbone.length_buckets` buys back.

The responses inside one list differ in length, so batching whole lists cannot remove all padding.
`backbone.length_buckets=N` (`rankrm.encoding.Bucketed`) encodes a batch's responses in at most N chunks
of similar length (split points chosen to minimise padded cells), each padded only to its own longest. This script
prints, on the VADER train lists:
1. the padded-token share for N = 1..4, with and without length grouping (no model needed);
2. fwd+bwd time of the real backbone over the same batches for each N (median of `--repeats`).

    python scripts/bench_buckets.py --backbone minilm --batches 12 --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from rankrm import CONF_DIR
from rankrm.backbones import build_reward_model
from rankrm.encoding import Bucketed

CONF = str(CONF_DIR)


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        return compose("train", overrides=list(overrides))


def padded_share(batches: list[dict], buckets: int) -> float:
    """Share of padded positions when each batch is encoded as the model does with `buckets` chunks."""
    real = padded = 0
    for b in batches:
        lens = b["attention_mask"].sum(-1)  # (N,)
        chunks = Bucketed(buckets).chunks(lens)  # the model's own blocks for this batch
        padded += sum(len(idx) * int(lens[idx].max()) for idx in chunks)
        real += int(lens.sum())
    return 1 - real / padded


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="minilm")
    ap.add_argument("--batches", type=int, default=12, help="batches timed per repeat")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=3, help="0: padded shares only, no timing")
    ap.add_argument("--buckets", type=int, nargs="+", default=[1, 2, 3, 4])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, tok = build_reward_model(compose_train(f"backbone={args.backbone}").backbone)
    grouped: list[dict] = []
    for grouping in (True, False):
        dm = instantiate(compose_train(f"data.length_grouping={grouping}").data, tokenizer=tok, seed=0)
        dm.setup("fit")
        batches = list(dm.train_dataloader())
        grouped = grouped or batches  # time the default (grouped) batches
        shares = ", ".join(f"N={n}: {padded_share(batches, n):.3f}" for n in args.buckets)
        print(f"padded share, length_grouping={grouping}, {len(batches)} batches: {shares}")
    timed = grouped[: args.batches]
    model.train()
    times: dict[int, list[float]] = {n: [] for n in args.buckets}
    for _ in range(args.repeats):  # interleaved, so load drifts hit every N alike
        for n in args.buckets:
            model.length_buckets = n
            start = time.perf_counter()
            for b in timed:
                model(b["input_ids"], b["attention_mask"], b.get("token_type_ids")).sum().backward()
            times[n].append(time.perf_counter() - start)
    for n, ts in times.items() if args.repeats else ():
        print(
            f"length_buckets={n}: median {statistics.median(ts):.2f} s for {len(timed)} fwd+bwd batches "
            f"({args.threads} thread(s), load {os.getloadavg()[0]:.1f})"
        )


if __name__ == "__main__":
    main()
