"""Shared helpers of the benchmark scripts, child side: what runs inside a measured process.

Counting padded slots, scoring held-out lists with rankrm's metrics, the process's own peak RSS,
and the Lightning probe that `bench_common.run_rankrm_cli` adds to a training run. Torch and
Lightning are imported inside the functions: the orchestrating parent imports this module too
(through the scripts) and must stay light, see `bench_common`.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


def read_lists(path: str | Path) -> list[Any]:
    """RankedLists from a list JSONL, through rankrm's own reader."""
    from rankrm.data.readers import read_jsonl
    from rankrm.data.validate import DropLog

    return read_jsonl(path, DropLog()).lists


class PaddingCounter:
    """Real vs padded token slots over the attention masks it is fed."""

    def __init__(self) -> None:
        self.real, self.total, self.batches = 0, 0, 0

    def count(self, attention_mask: Any) -> None:
        self.real += int(attention_mask.sum())
        self.total += attention_mask.numel()
        self.batches += 1

    @property
    def pad_share(self) -> float:
        return 1.0 - self.real / self.total if self.total else float("nan")


def evaluate_lists(score: Callable[[list[Any]], Any], lists: Sequence[Any], batch_lists: int = 16) -> dict[str, float]:
    """rankrm's metrics of `score(lists) -> (N,)` (every response, row-major), chunk by chunk."""
    import torch

    from rankrm.metrics import ranking_metrics

    k = max(rl.k for rl in lists)
    mask = torch.tensor([[i < rl.k for i in range(k)] for rl in lists])  # (B, K)
    labels = torch.tensor([list(rl.labels) + [0.0] * (k - rl.k) for rl in lists])  # (B, K)
    with torch.no_grad():
        scores = torch.cat(
            [score(list(lists[i : i + batch_lists])).float() for i in range(0, len(lists), batch_lists)]
        )  # (N,)
    rewards = torch.zeros(len(lists), k).masked_scatter(mask, scores)  # (B, K)
    return {name: float(v) for name, v in ranking_metrics(rewards, labels, mask).items()}


def vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so reset by exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rankrm_val_scorer(module: Any, tokenizer: Any, max_length: int | None) -> Callable[[list[Any]], Any]:
    """Score whole val lists the way rankrm's data module feeds them (truncating, never dropping)."""
    from rankrm.data.collate import RankCollator
    from rankrm.data.tokenize import encode_lists

    collate = RankCollator(tokenizer.pad_token_id, getattr(tokenizer, "padding_side", "right"))

    def score_lists(lists: list[Any]) -> Any:
        encoded, _ = encode_lists(tokenizer, lists, max_length, overlong="truncate")
        batch = collate(encoded)
        return module.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (N,)

    return score_lists


class FitStats:
    """What a training run saw and how long it took; fed by the probe's hooks (plain Python)."""

    def __init__(self) -> None:
        self.built = self.fit_start = self.step_start = time.perf_counter()
        self.pad, self.step_s = PaddingCounter(), []
        self.examples = self.pairs = self.sequences = 0

    def batch_start(self, batch: dict) -> None:
        from rankrm.pairs import pair_mask

        self.step_start = time.perf_counter()
        self.pad.count(batch["attention_mask"])
        self.examples += batch["mask"].shape[0]
        self.sequences += batch["input_ids"].shape[0]
        self.pairs += int(pair_mask(batch["labels"], batch["mask"]).sum())

    def result(self, trainer: Any) -> dict[str, Any]:
        end, train = time.perf_counter(), trainer.datamodule.stats.get("train", {})
        return {
            "train_s": end - self.built,
            "fit_loop_s": end - self.fit_start,
            "examples": self.examples,
            "pairs": self.pairs,
            "sequences": self.sequences,
            "pad_share": self.pad.pad_share,
            "batches": self.pad.batches,
            "steps": trainer.global_step,
            "first_step_s": self.step_s[0] if self.step_s else None,
            "median_step_s": statistics.median(self.step_s) if self.step_s else None,
            "world_size": trainer.world_size,
            "rank": trainer.global_rank,
            "train_lists": train.get("lists"),
            "overlong_filtered": train.get("overlong_filtered"),
            "peak_rss_rank_mb": vm_hwm_mb(),
        }


def make_probe(out: str, val_file: str | None = None, max_length: int | None = None) -> Any:
    """Hydra `_target_` for a Lightning callback that times the fit and counts what it saw.

    Built when the runner instantiates callbacks, i.e. after the model, right before the
    Trainer: the window [probe built, train end] covers Trainer construction, data setup
    (reading + tokenising) and the fit loop. On train end, rank 0 scores `val_file` (if given)
    and writes `out`; rank r > 0 writes `out.rank<r>` (DDP). Lightning is imported here, not at
    the top: the orchestrating parent must stay small (see the module docstring).
    """
    import lightning.pytorch as pl

    stats = FitStats()

    class BenchProbe(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            stats.fit_start = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            stats.batch_start(batch)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            stats.step_s.append(time.perf_counter() - stats.step_start)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            res = stats.result(trainer)
            if val_file and trainer.is_global_zero:
                pl_module.eval()
                scorer = rankrm_val_scorer(pl_module, trainer.datamodule.tokenizer, max_length)
                res.update({f"val_{k}": v for k, v in evaluate_lists(scorer, read_lists(val_file)).items()})
                pl_module.train()
            Path(out if trainer.is_global_zero else f"{out}.rank{trainer.global_rank}").write_text(json.dumps(res))

    return BenchProbe()
