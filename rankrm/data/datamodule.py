"""`RankDataModule`: read -> validate -> tokenise once into the token cache -> split -> batches.

The runner builds it with `hydra.utils.instantiate(cfg.data, tokenizer=tokenizer, seed=cfg.seed)`.
`setup()` maps the source's token cache (`rankrm.data.cache`: built on the first run, mapped by
every later run, sweep trial and DDP rank), then carves the splits, filters and batches from its
arrays; later calls return at once, so fit and test share it. Nothing holds the data set as
Python objects: a split is index arrays over the mapped tokens, and the collator reads one
batch's token slices. `stats`, a JSON-serialisable dict for metrics.json:

  reader, format, seed, max_length, batching   what was configured (format: the parser of a row source)
  cache {on, dir, hit, seconds, tokens, bytes}  the token cache entry this run mapped (hit: built earlier;
                                            on=false: a private entry, deleted at exit, dir null)
  dropped_invalid {reason: n}               records dropped by `skip_invalid` (all files)
  source {...}                              reader facts (e.g. VADER texts per split, OASST unranked groups)
  train / val / test:
    lists_read      lists the reader put in this split
    tied_dropped    lists with all labels equal (no pair: kept out, counted)
    over_limit      lists cut by limit_train/val/test
    overlong_filtered, truncated_lists, truncated_responses   see `tokenize`
    lists           lists kept;  examples: dataset items (= lists, or pairs with as_pairs)
    pairs           valid (better, worse) pairs in the kept lists
    k_hist {K: n}   over the examples
    responses, tokens, padded_tokens, padded_share, batches   one epoch of the configured batching
Under DDP the Trainer needs `use_distributed_sampler=False`: the batch sampler shards itself.
`preread` (a `cache.SourceCheck`) is what the runner's preflight learnt of the source (its key,
its drops), so the files are not hashed twice. The train loader is a `ResumableLoader`: a
checkpoint saved mid-epoch records how many batches were done, and a resumed run continues after them.

Memory: index arrays of a few int64s a list and a sequence (see `items`), plus the pages of the
mapped files the OS keeps cached (shared by every process that maps them). Time of a cached
setup: vectorised passes over the lists, plus Python loops where the in-memory path's exact
order needs them: `random.shuffle` of the group ranks when carving and of the pairs with
`as_pairs`, and the `max_tokens` packing (see scripts/bench_data.py for measured figures).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only
from torch.utils.data import DataLoader

from rankrm.data.cache import SourceCheck, open_tokens
from rankrm.data.collate import RankCollator, padding_counts
from rankrm.data.items import SplitItems, count_pairs, select, split_info, split_rows
from rankrm.data.sampler import ListBatchSampler
from rankrm.data.sources import describe, resolve
from rankrm.data.splits import SPLITS
from rankrm.data.tokenize import effective_max_length
from rankrm.errors import RankrmError
from rankrm.inputs import InputFormat

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> dict[str, Any]:
    """A Hydra DictConfig (or any mapping) as a plain dict."""
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except ImportError:  # omegaconf is optional for library use
        pass
    return dict(cfg)


class RankDataModule(pl.LightningDataModule):
    """Train/val/test ranked lists for a reward model; see the module docstring for `stats`."""

    def __init__(
        self,
        tokenizer: Any,
        source: Mapping[str, Any],
        seed: int = 0,
        batch_size: int = 8,
        max_tokens: int | None = None,
        max_length: int | None = 128,
        overlong: str = "filter",
        truncation_side: str = "left",
        length_grouping: bool = True,
        skip_invalid: bool = False,
        num_workers: int = 0,
        as_pairs: bool = False,
        limit_train: int | None = None,
        limit_val: int | None = None,
        limit_test: int | None = None,
        prompt_joiner: str = "",
        cache: bool = True,
        cache_dir: str | None = None,
        preread: SourceCheck | None = None,
    ) -> None:
        super().__init__()
        if getattr(tokenizer, "pad_token_id", None) is None:
            raise RankrmError("the tokenizer has no pad token (the backbone must set one before the data module)")
        self.tokenizer, self.source, self.seed = tokenizer, _plain(source), int(seed)
        self.batch_size, self.max_tokens, self.max_length = batch_size, max_tokens, max_length
        self.overlong, self.truncation_side, self.length_grouping = overlong, truncation_side, length_grouping
        self.skip_invalid, self.num_workers, self.as_pairs = skip_invalid, num_workers, as_pairs
        self.limits = {"train": limit_train, "val": limit_val, "test": limit_test}
        self.cache, self.cache_dir = cache, cache_dir
        self.collator = RankCollator(tokenizer.pad_token_id, getattr(tokenizer, "padding_side", "right"))
        self.preread = preread
        self.input_format = InputFormat(joiner=prompt_joiner)  # saved with the export: scoring reads it back
        self.datasets: dict[str, SplitItems] | None = None
        self.stats: dict[str, Any] = {}

    def prepare_data(self) -> None:
        """Runs on one process per node before `setup`: the source's prepare hook (e.g. a VADER fetch)."""
        resolve(self.source).prepare()

    def sampler(
        self, split: str, num_replicas: int = 1, rank: int = 0, items: SplitItems | None = None
    ) -> ListBatchSampler:
        """The batch sampler of a split (train shuffles per epoch; val/test keep a fixed order)."""
        if items is None:
            assert self.datasets is not None, "call setup() first"
            items = self.datasets[split]
        return ListBatchSampler(
            items.sizes(),
            self.batch_size,
            self.max_tokens,
            shuffle=split == "train",
            length_grouping=self.length_grouping,
            seed=self.seed,
            num_replicas=num_replicas,
            rank=rank,
        )

    def _split_stats(self, split: str, kept: np.ndarray, items: SplitItems) -> dict[str, Any]:
        batches = self.sampler(split, items=items).epoch_arrays(0) if len(items) else []
        real, pad = padding_counts(batches, items.k, items.n_tokens, items.max_len)
        ks, n = np.unique(items.k, return_counts=True)
        return {
            "lists": len(kept),
            "examples": len(items),
            "pairs": count_pairs(items.store, kept),
            "k_hist": {str(k): int(c) for k, c in zip(ks, n)},
            "responses": int(items.k.sum()),
            "tokens": real,
            "padded_tokens": pad,
            "padded_share": round(pad / (real + pad), 4) if real else 0.0,
            "batches": len(batches),
        }

    def setup(self, stage: str | None = None) -> None:
        """Map the token cache (building it once), then split, filter and size the batches; idempotent."""
        if self.datasets is not None:
            return
        r = resolve(self.source)
        max_len = effective_max_length(self.tokenizer, self.max_length)
        store, cache = open_tokens(
            self.source,
            self.tokenizer,
            self.seed,
            max_len,
            self.overlong,
            self.truncation_side,
            self.skip_invalid,
            self.input_format,
            self.cache_dir,
            self.cache,
            self.preread,
        )
        rows, carved = split_rows(store, r.options.get("fractions", ()), self.seed)
        m = store.manifest
        stats: dict[str, Any] = {
            "reader": self.source.get("reader"),
            "format": r.parsing.name if r.parsing else None,
            "seed": self.seed,
            "max_length": max_len,
            "input_format": self.input_format.to_metadata(),
            "batching": {
                "batch_size": self.batch_size,
                "max_tokens": self.max_tokens,
                "length_grouping": self.length_grouping,
                "as_pairs": self.as_pairs,
            },
            "cache": cache,
            "dropped_invalid": m["dropped"],
            "source": split_info(store, carved),
        }
        datasets: dict[str, SplitItems] = {}
        for split in SPLITS:
            kept, counts = select(store, rows[split], self.limits[split], self.seed, split)
            pairs = self.as_pairs and split == "train"
            datasets[split] = SplitItems.of_pairs(store, kept, self.seed) if pairs else SplitItems.of_lists(store, kept)
            stats[split] = {**counts, **self._split_stats(split, kept, datasets[split])}
        self.stats = stats
        for split in ("train", "val"):  # val picks the best checkpoint: an empty one is an error too
            if not len(datasets[split]):
                raise RankrmError(
                    f"{describe(self.source)}: no {split} lists left after validation and filtering "
                    f"(all labels tied, longer than data.max_length with overlong=filter, too few "
                    f"texts for data.source.k / min_gap, or limits): {summary(stats)}"
                )
        self.datasets = datasets
        rank_zero_info(summary(stats))
        if m["examples"] and rank_zero_only.rank == 0:
            log.warning("skipped invalid records, e.g.: %s", " | ".join(m["examples"]))

    def _loader(self, split: str) -> DataLoader:
        if self.datasets is None:
            self.setup()
        trainer = getattr(self, "trainer", None)
        replicas, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        # A private generator: each new iterator draws a worker base seed, which would otherwise
        # advance the global RNG (dropout's) and make a resumed run draw other dropout masks.
        items = self.datasets[split]  # type: ignore[index]
        return ResumableLoader(
            items,
            batch_sampler=self.sampler(split, replicas, rank),
            collate_fn=self.collator,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            generator=torch.Generator().manual_seed(self.seed),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


class ResumableLoader(DataLoader):
    """A DataLoader over a `ListBatchSampler` whose place in the epoch goes into Lightning checkpoints.

    Lightning saves `state_dict()` of a train loader that has one (its `_Stateful` protocol) and
    calls `load_state_dict()` before iterating again after a mid-epoch restart; the sampler then
    skips the batches already trained on, so the resumed run sees the same batches as an
    uninterrupted one. Batches are counted as they are handed out (Lightning does not prefetch
    from a loader with a length), so worker prefetching does not shift the count.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.position = {"epoch": 0, "batches_done": 0}

    def __iter__(self) -> Any:
        return self._counted()

    def _counted(self) -> Any:
        # A generator: runs at the first `next()`, after Lightning's `set_epoch`.
        sampler = self.batch_sampler
        self.position = {"epoch": sampler.epoch, "batches_done": sampler.pending_skip()}
        for batch in DataLoader.__iter__(self):
            self.position["batches_done"] += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return dict(self.position)

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.batch_sampler.resume_at(state["epoch"], state["batches_done"])


def summary(stats: Mapping[str, Any]) -> str:
    """One line: what each split holds and what was dropped or cut, and why."""
    parts = []
    for s in SPLITS:
        st = stats.get(s)
        if st is None:
            continue
        ks = ",".join(f"K{k}:{n}" for k, n in st.get("k_hist", {}).items())
        parts.append(
            f"{s} {st.get('lists', 0)} lists ({ks}; {st.get('examples', 0)} examples, "
            f"padded {100 * st.get('padded_share', 0):.1f}%)"
        )
    drops = {
        s: {
            k: stats[s][k]
            for k in ("tied_dropped", "overlong_filtered", "truncated_lists", "over_limit")
            if stats.get(s, {}).get(k)
        }
        for s in SPLITS
    }
    dropped = "; ".join(f"{s}: {d}" for s, d in drops.items() if d) or "none"
    return (
        f"rankrm data [{stats.get('reader')}]: "
        + ", ".join(parts)
        + f" | invalid dropped: {stats.get('dropped_invalid') or 'none'} | filtered/cut: {dropped}"
    )
