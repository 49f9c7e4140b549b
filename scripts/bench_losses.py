"""Benchmark: vectorised ranking losses and metrics vs the seed article's Python loop.

The seed article's `compute_rank_list_loss` loops over lists, then i, then j > i, adding
`sigmoid(r_i - r_j)` (its reader's fix: `logsigmoid`) one scalar op at a time. Here each loss
is timed forward + backward on a (B, K) reward tensor of strict ranked lists, median of
several repeats, single-threaded by default so the figure does not depend on machine load
from other processes as much. On strict equal-length lists the loop equals `ranklist` /
`ranklist_sigmoid` exactly, which is checked before timing.

    python scripts/bench_losses.py [--batch 64] [--k 9] [--repeats 30] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from rankrm.losses import LOSSES
from rankrm.metrics import RankingMetrics
from rankrm.pairs import pair_index


def seed_loop_loss(rewards: torch.Tensor, pair_fn: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """The seed article's triple loop (lists, i, j > i), pooled count, negated; lists best-first."""
    loss, count = rewards.new_zeros(()), 0
    for rank_rewards in rewards.unbind(0):  # the seed receives a list of per-response tensors
        rank_rewards = rank_rewards.unbind(0)
        for i in range(len(rank_rewards) - 1):
            for j in range(i + 1, len(rank_rewards)):
                loss = loss + pair_fn(rank_rewards[i] - rank_rewards[j])
                count += 1
    return -loss / count


def pairwise_indexed(rewards: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pooled Bradley-Terry through explicit pair indices (nonzero + gather), for the dense-vs-index row."""
    b, i, j = pair_index(labels, mask)
    return -F.logsigmoid(rewards[b, i] - rewards[b, j]).mean()


def time_fwd_bwd(fn: Callable[[torch.Tensor], torch.Tensor], rewards: torch.Tensor, repeats: int) -> float:
    """Median seconds of fn(r).backward() on a fresh leaf copy of `rewards`."""
    times = []
    for n in range(repeats + 2):  # two warm-up calls
        r = rewards.clone().requires_grad_(True)
        start = time.perf_counter()
        fn(r).backward()
        if n >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def time_metrics(rewards: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, repeats: int) -> float:
    """Median seconds of one RankingMetrics.update (what every validation step pays)."""
    metric, times = RankingMetrics(), []
    for n in range(repeats + 2):
        start = time.perf_counter()
        metric.update(rewards, labels, mask)
        if n >= 2:
            times.append(time.perf_counter() - start)
    metric.compute()
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64, help="lists per batch (B)")
    parser.add_argument("--k", type=int, default=9, help="responses per list (K)")
    parser.add_argument("--repeats", type=int, default=30, help="timed repeats per row (median reported)")
    parser.add_argument("--loop-repeats", type=int, default=7, help="timed repeats of the slow loop rows")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    rewards = torch.randn(args.batch, args.k, generator=gen)
    labels = torch.arange(args.k - 1, -1, -1.0).expand(args.batch, args.k)  # strict, best first
    mask = torch.ones(args.batch, args.k, dtype=torch.bool)

    loops = {
        "ranklist": lambda r: seed_loop_loss(r, F.logsigmoid),  # the reader's fix
        "ranklist_sigmoid": lambda r: seed_loop_loss(r, torch.sigmoid),
    }
    for name, loop in loops.items():  # same number before timing
        torch.testing.assert_close(loop(rewards), LOSSES[name](rewards, labels, mask))

    loop_s = {name: time_fwd_bwd(loop, rewards, args.loop_repeats) for name, loop in loops.items()}
    rows = []
    for name, fn in [*LOSSES.items(), ("pairwise (pair_index gather)", pairwise_indexed)]:
        sec = time_fwd_bwd(lambda r, fn=fn: fn(r, labels, mask), rewards, args.repeats)
        rows.append((name, sec, loop_s.get(name)))

    print(
        f"B={args.batch}, K={args.k} ({args.k * (args.k - 1) // 2} pairs/list), forward+backward, "
        f"median of {args.repeats} (loop: {args.loop_repeats}), {args.threads} thread(s), "
        f"torch {torch.__version__}, load avg {os.getloadavg()[0]:.2f}\n"
    )
    print("| loss | vectorised (ms) | seed loop (ms) | speed-up |")
    print("|---|---:|---:|---:|")
    for name, sec, loop in rows:
        loop_txt, ratio = (f"{loop * 1e3:.2f}", f"{loop / sec:.0f}x") if loop else ("", "")
        print(f"| {name} | {sec * 1e3:.3f} | {loop_txt} | {ratio} |")
    metric_s = time_metrics(rewards, labels, mask, args.repeats)
    print(f"| RankingMetrics.update (all metrics, no grad) | {metric_s * 1e3:.3f} | | |")
    vec = dict((name, sec) for name, sec, _ in rows)
    print(
        f"\nspeed-up ranklist vs seed loop (logsigmoid): {loop_s['ranklist'] / vec['ranklist']:.0f}x; "
        f"ranklist_sigmoid vs seed loop (sigmoid): {loop_s['ranklist_sigmoid'] / vec['ranklist_sigmoid']:.0f}x"
    )


if __name__ == "__main__":
    main()
