"""The data path before the token cache (issue 14), kept as the reference the cached path must equal.

Plain Python over `RankedList`s and `EncodedList`s, as `RankDataModule` did it until the cache:
read every list into memory (`read_source`), drop tied lists, take the seeded `limit_*` subset,
tokenise with `encode_lists`, expand pairs, sort and cut batches with Python's `sorted`, shard
them per rank, pad each sequence with its own tensor. It shares no array code with the cached
path (`items`, `sampler`, `collate`), only the reader and the tokenizer call.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import numpy as np
import torch

from rankrm.data.sources import read_source
from rankrm.data.splits import SPLITS
from rankrm.data.tokenize import EncodedList, effective_max_length, encode_lists
from rankrm.data.validate import all_tied
from rankrm.inputs import InputFormat


def expand_pairs(items: list[EncodedList], seed: int) -> list[EncodedList]:
    out = []
    for it in items:
        for i in range(it.k):
            for j in range(i + 1, it.k):
                if it.labels[i] == it.labels[j]:
                    continue
                c, r = (i, j) if it.labels[i] > it.labels[j] else (j, i)
                types = None if it.type_ids is None else [it.type_ids[c], it.type_ids[r]]
                out.append(EncodedList([it.ids[c], it.ids[r]], types, (1.0, 0.0), it.source))
    random.Random(f"{seed}:pairs").shuffle(out)
    return out


def epoch_batches(sizes: list[tuple[int, int]], cfg: dict[str, Any], shuffle: bool, epoch: int) -> list[list[int]]:
    """One epoch's global batches, as the sampler cut them before it used numpy arrays."""
    rng = np.random.default_rng([cfg["seed"], epoch]) if shuffle else None
    order = rng.permutation(len(sizes)).tolist() if rng is not None else list(range(len(sizes)))
    if cfg["length_grouping"]:
        order = sorted(order, key=lambda i: (sizes[i][1], sizes[i][0]))
    if cfg["max_tokens"] is None:
        size = cfg["batch_size"] * cfg["replicas"]
        batches = [order[s : s + size] for s in range(0, len(order), size)]
    else:
        batches, cur, rows, width = [], [], 0, 0
        for i in order:
            k, t = sizes[i]
            if cur and (rows + k) * max(width, t) > cfg["max_tokens"]:
                batches.append(cur)
                cur, rows, width = [], 0, 0
            cur.append(i)
            rows, width = rows + k, max(width, t)
        batches += [cur] if cur else []
    if rng is not None and cfg["length_grouping"]:
        batches = [batches[j] for j in rng.permutation(len(batches))]
    return batches


def rank_batches(batches: list[list[int]], cfg: dict[str, Any], rank: int) -> list[list[int]]:
    r = cfg["replicas"]
    if r == 1 or not batches:
        return batches
    if cfg["max_tokens"] is None:
        steps = [[b[j * len(b) // r : (j + 1) * len(b) // r] for j in range(r)] for b in batches]
    else:
        steps = [batches[s : s + r] for s in range(0, len(batches), r)]
    pool = [part for step in steps for part in step if part]
    out = []
    for step in steps:
        parts = [p for p in step if p]
        parts += [pool[j % len(pool)] for j in range(r - len(parts))]
        out.append(parts[rank])
    return out


def collate(items: list[EncodedList], pad_id: int, side: str) -> dict[str, torch.Tensor]:
    seqs = [s for it in items for s in it.ids]
    width = max(len(s) for s in seqs)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:
        out = torch.full((len(rows), width), value, dtype=torch.long)
        for r, s in enumerate(rows):
            if side == "right":
                out[r, : len(s)] = torch.tensor(s, dtype=torch.long)
            else:
                out[r, width - len(s) :] = torch.tensor(s, dtype=torch.long)
        return out

    batch = {"input_ids": pad(seqs, pad_id), "attention_mask": pad([[1] * len(s) for s in seqs], 0)}
    if items[0].type_ids is not None:
        batch["token_type_ids"] = pad([t for it in items for t in it.type_ids], 0)
    k_max = max(it.k for it in items)
    labels = torch.zeros(len(items), k_max, dtype=torch.float32)
    mask = torch.zeros(len(items), k_max, dtype=torch.bool)
    for b, it in enumerate(items):
        labels[b, : it.k] = torch.tensor(it.labels, dtype=torch.float32)
        mask[b, : it.k] = True
    batch["labels"], batch["mask"] = labels, mask
    return batch


def _split_stats(kept: list[EncodedList], items: list[EncodedList], batches: list[list[int]]) -> dict[str, Any]:
    real = pad = 0
    for idx in batches:
        lens = [len(s) for i in idx for s in items[i].ids]
        real += sum(lens)
        pad += len(lens) * max(lens) - sum(lens)
    return {
        "lists": len(kept),
        "examples": len(items),
        "pairs": sum(sum(1 for a in e.labels for b in e.labels if a > b) for e in kept),
        "k_hist": {str(k): n for k, n in sorted(Counter(e.k for e in items).items())},
        "responses": sum(e.k for e in items),
        "tokens": real,
        "padded_tokens": pad,
        "padded_share": round(pad / (real + pad), 4) if real else 0.0,
        "batches": len(batches),
    }


def reference(tokenizer: Any, source: dict[str, Any], **kw: Any) -> tuple[dict[str, Any], dict[str, list[EncodedList]]]:
    """(stats as the in-memory data module reported them, items per split)."""
    cfg = {"seed": 0, "batch_size": 8, "max_tokens": None, "max_length": 128, "overlong": "filter"}
    cfg.update({"truncation_side": "left", "length_grouping": True, "skip_invalid": False, "as_pairs": False})
    cfg.update({"replicas": 1, **kw})
    read = read_source(source, cfg["seed"], cfg["skip_invalid"])
    max_len = effective_max_length(tokenizer, cfg["max_length"])
    stats: dict[str, Any] = {"dropped_invalid": read.drops.as_dict(), "source": read.info, "max_length": max_len}
    datasets = {}
    for split in SPLITS:
        lists = read.splits.get(split, [])
        untied = [rl for rl in lists if not all_tied(rl)]
        cap = cfg.get(f"limit_{split}")
        limited = untied
        if cap is not None and len(untied) > cap:
            keep = sorted(random.Random(f"{cfg['seed']}:limit:{split}").sample(range(len(untied)), int(cap)))
            limited = [untied[i] for i in keep]
        fmt = InputFormat(joiner=cfg.get("prompt_joiner", ""))
        kept, counts = encode_lists(tokenizer, limited, max_len, cfg["overlong"], cfg["truncation_side"], fmt)
        items = expand_pairs(kept, cfg["seed"]) if (cfg["as_pairs"] and split == "train") else kept
        batches = epoch_batches([(e.k, e.max_len) for e in items], {**cfg, "replicas": 1}, split == "train", 0)
        stats[split] = {
            "lists_read": len(lists),
            "tied_dropped": len(lists) - len(untied),
            "over_limit": len(untied) - len(limited),
            **counts,
            **_split_stats(kept, items, batches if items else []),
        }
        datasets[split] = items
    return stats, datasets


def loader_batches(
    tokenizer: Any, items: list[EncodedList], split: str, epoch: int, rank: int = 0, **kw: Any
) -> list[dict[str, torch.Tensor]]:
    """What rank `rank`'s loader of `split` yielded in `epoch`."""
    cfg = {"seed": 0, "batch_size": 8, "max_tokens": None, "length_grouping": True, "replicas": 1, **kw}
    sizes = [(e.k, e.max_len) for e in items]
    batches = rank_batches(epoch_batches(sizes, cfg, split == "train", epoch), cfg, rank)
    side = getattr(tokenizer, "padding_side", "right")
    return [collate([items[i] for i in b], tokenizer.pad_token_id, side) for b in batches]
