"""RankDataModule: sampler determinism and DDP sharding, as_pairs, stats, Hydra configs, a Lightning fit."""

from __future__ import annotations

import json
import logging
from math import comb
from pathlib import Path

import pytest
import torch
from data_fixtures import (
    CountingTokenizer,
    minilm_tokenizer,
    oasst_tree,
    strict_rows,
    write_asap,
    write_jsonl,
    write_vader,
)

from rankrm import CONF_DIR
from rankrm.data.datamodule import RankDataModule
from rankrm.data.sampler import ListBatchSampler
from rankrm.errors import RankrmError

CONF = CONF_DIR


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def _sizes(n: int = 37) -> list[tuple[int, int]]:
    return [(2 + i % 3, 5 + (i * 7) % 23) for i in range(n)]


def test_sampler_is_seeded_covers_everything_and_changes_per_epoch() -> None:
    s = ListBatchSampler(_sizes(), batch_size=4, seed=1)
    e0 = list(s)
    assert e0 == list(ListBatchSampler(_sizes(), batch_size=4, seed=1))
    assert sorted(i for b in e0 for i in b) == list(range(37)) and len(e0) == len(s) == 10
    s.set_epoch(1)
    assert list(s) != e0 and sorted(i for b in s for i in b) == list(range(37))
    assert list(ListBatchSampler(_sizes(), batch_size=4, seed=2)) != e0
    ev = ListBatchSampler(_sizes(), batch_size=4, shuffle=False)
    ev.set_epoch(5)
    assert list(ev) == ev.epoch_batches(0)  # val/test: one fixed order


def _pad(batches: list[list[int]], sizes: list[tuple[int, int]]) -> int:
    return sum(sum(sizes[i][0] for i in b) * max(sizes[i][1] for i in b) for b in batches)


def test_length_grouping_pads_less_than_random_batches() -> None:
    sizes = _sizes(200)
    grouped = ListBatchSampler(sizes, batch_size=8, seed=0).epoch_batches()
    rand = ListBatchSampler(sizes, batch_size=8, seed=0, length_grouping=False).epoch_batches()
    assert _pad(grouped, sizes) < 0.8 * _pad(rand, sizes)


def test_token_budget_batches() -> None:
    sizes = _sizes(60)
    s = ListBatchSampler(sizes, max_tokens=120, seed=0)
    batches = list(s)
    assert sorted(i for b in batches for i in b) == list(range(60)) and len(batches) == len(s)
    for b in batches:
        assert len(b) == 1 or sum(sizes[i][0] for i in b) * max(sizes[i][1] for i in b) <= 120
    s.set_epoch(3)
    assert len(list(s)) == len(s)  # a stable number of steps per epoch
    # max_tokens without length_grouping is refused by the config schema: tests/test_config.py


def test_ddp_ranks_split_the_epoch_evenly() -> None:
    # Step s of 3 ranks x 4 lists holds exactly batch s of one process with 12 lists per batch.
    one = ListBatchSampler(_sizes(), batch_size=12, seed=3).epoch_batches()
    ranks = [list(ListBatchSampler(_sizes(), batch_size=4, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(r) for r in ranks] == [4, 4, 4] == [len(ListBatchSampler(_sizes(), 4, num_replicas=3, rank=0))] * 3
    for s, batch in enumerate(one):
        if len(batch) == 12:
            assert [i for r in ranks for i in r[s]] == batch and all(len(r[s]) == 4 for r in ranks)
        else:  # 37 = 3 * 12 + 1: the list left over goes to one rank, the others wrap around
            assert batch in [r[s] for r in ranks]
    assert sorted({i for r in ranks for b in r for i in b}) == list(range(37))
    budget = [list(ListBatchSampler(_sizes(), max_tokens=120, seed=3, num_replicas=2, rank=r)) for r in range(2)]
    full = ListBatchSampler(_sizes(), max_tokens=120, seed=3).epoch_batches()
    assert [b for pair in zip(*budget) for b in pair][: len(full)] == full  # token budgets: R batches per step


def _dm(tok, path: Path, **kw) -> RankDataModule:
    return RankDataModule(tok, {"reader": "jsonl", "path": str(path)}, seed=0, **kw)


def test_as_pairs_expands_train_only_into_c_k_2_pairs(tok, tmp_path: Path) -> None:
    rows = [{"prompt": f"p{i}", "responses": [f"r{j} of {i}" for j in range(2 + i % 4)]} for i in range(40)]
    rows.append({"prompt": "graded", "responses": ["a", "b", "c"], "scores": [1, 1, 0]})
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    plain, pairs = _dm(tok, path), _dm(tok, path, as_pairs=True)
    plain.setup("fit")
    pairs.setup("fit")
    train = plain.datasets["train"]
    expected = sum(comb(e.k, 2) if len(set(e.labels)) == e.k else 2 for e in train)
    assert len(pairs.datasets["train"]) == expected == pairs.stats["train"]["examples"] == plain.stats["train"]["pairs"]
    assert all(e.k == 2 and e.labels == (1.0, 0.0) for e in pairs.datasets["train"])
    assert list(pairs.datasets["val"]) == list(plain.datasets["val"])
    assert list(pairs.datasets["test"]) == list(plain.datasets["test"])
    b = next(iter(pairs.train_dataloader()))
    assert b["labels"].shape == (8, 2) and b["input_ids"].shape[0] == 16


def test_setup_once_stats_and_summary(tok, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rows = strict_rows(30) + [
        {"responses": ["x", "y"], "scores": [1, 1]},
        {"responses": ["only"]},
        {"responses": ["long " * 200, "short"]},
    ]
    counting = CountingTokenizer(tok)
    source = {"reader": "jsonl", "train": str(write_jsonl(tmp_path / "d.jsonl", rows))}
    kw = {"seed": 0, "skip_invalid": True, "max_length": 64, "limit_val": 2, "cache_dir": str(tmp_path / "cache")}
    dm = RankDataModule(counting, source, **kw)
    with caplog.at_level(logging.INFO):
        dm.setup("fit")
    n_calls = sum(counting.seen.values())
    dm.setup("test")
    RankDataModule(counting, source, **kw).setup("fit")  # a second run maps the token cache
    assert n_calls == 4 * 30 + 2 and sum(counting.seen.values()) == n_calls  # each untied response once, ever
    st = json.loads(json.dumps(dm.stats))
    assert st["dropped_invalid"] == {"k<2": 1}
    total = {
        k: sum(st[s][k] for s in ("train", "val", "test")) for k in ("tied_dropped", "overlong_filtered", "lists_read")
    }
    assert total == {"tied_dropped": 1, "overlong_filtered": 1, "lists_read": 32}
    assert st["val"]["lists"] == 2 and st["val"]["over_limit"] >= 1
    tr = st["train"]
    assert tr["k_hist"] == {"4": tr["lists"]} and tr["pairs"] == 6 * tr["lists"] and 0 < tr["padded_share"] < 1
    assert tr["batches"] == len(dm.train_dataloader())
    assert "rankrm data [jsonl]" in caplog.text and "invalid dropped: {'k<2': 1}" in caplog.text


def test_no_training_lists_is_a_user_error(tok, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{"responses": ["x", "y"], "scores": [1, 1]}] * 3)
    with pytest.raises(RankrmError, match="no train lists left.*tied_dropped"):
        _dm(tok, path).setup("fit")


def test_no_val_lists_is_a_user_error(tok, tmp_path: Path) -> None:
    """Val picks the best checkpoint: a val file whose lists all tie stops the run before training."""
    train = write_jsonl(tmp_path / "train.jsonl", strict_rows(8))
    val = write_jsonl(tmp_path / "val.jsonl", [{"responses": ["x", "y"], "scores": [1, 1]}] * 3)
    dm = RankDataModule(tok, {"reader": "jsonl", "train": str(train), "val": str(val), "test": str(train)}, seed=0)
    with pytest.raises(RankrmError, match="no val lists left.*tied_dropped"):
        dm.setup("fit")


def test_padding_side_of_the_tokenizer_is_respected(tmp_path: Path) -> None:
    left = minilm_tokenizer()
    left.padding_side = "left"
    dm = _dm(left, write_jsonl(tmp_path / "d.jsonl", strict_rows(12)))
    dm.setup("fit")
    am = next(iter(dm.train_dataloader()))["attention_mask"]
    assert (am[:, -1] == 1).all() and (am[:, 0] == 0).any()


def _compose(name: str, overrides: list[str]):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose(overrides=[f"+data={name}", *overrides])


def _config_cases(tmp: Path) -> dict[str, list[str]]:
    jsonl = write_jsonl(tmp / "l.jsonl", strict_rows(20))
    tsv = tmp / "s.tsv"
    tsv.write_text("".join(f"好{i}\t中{i}\t差{i}\n" for i in range(20)), encoding="utf-8")
    pairs = write_jsonl(tmp / "p.jsonl", [{"prompt": f"q{i}", "chosen": "good", "rejected": "bad"} for i in range(20)])
    trees = write_jsonl(tmp / "t.jsonl", [oasst_tree(f"T{i}") for i in range(10)])
    return {
        "vader": [f"data.source.data_dir={write_vader(tmp / 'v')}", "data.source.domains=[tweets,movie,amazon]"],
        "seed_tsv": [f"data.source.path={tsv}"],
        "jsonl": [f"data.source.path={jsonl}"],
        "trl_pairs": [f"data.source.path={pairs}"],
        "oasst": [f"data.source.path={trees}"],
        "hf": [f"data.source.path={jsonl}"],
        "asap": [f"data.source.data_dir={write_asap(tmp / 'a')}"],
    }


def test_every_data_config_instantiates_like_the_runner_does(tok, tmp_path: Path) -> None:
    from hydra.utils import instantiate

    cases = _config_cases(tmp_path)
    assert sorted(cases) == sorted(p.stem for p in (CONF / "data").glob("*.yaml") if p.stem != "base")
    for name, overrides in cases.items():
        cfg = _compose(name, [*overrides, "data.batch_size=4"])
        dm = instantiate(cfg.data, tokenizer=tok, seed=0)
        dm.setup("fit")
        batch = next(iter(dm.train_dataloader()))
        assert batch["labels"].shape[0] == 4 and batch["input_ids"].shape[0] == int(batch["mask"].sum()), name
        assert dm.stats["reader"] == name and dm.stats["train"]["lists"] > 0, name


def test_lightning_fit_and_test_drive_the_datamodule(tok, tmp_path: Path) -> None:
    import lightning.pytorch as pl

    class Tiny(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.EmbeddingBag(tok.vocab_size, 1, mode="sum")
            self.epochs_seen: list[list[list[int]]] = []

        def _loss(self, batch: dict) -> torch.Tensor:
            scores = self.emb(batch["input_ids"], per_sample_weights=batch["attention_mask"].float()).squeeze(-1)
            rewards = scores.new_zeros(batch["mask"].shape).masked_scatter(batch["mask"], scores)  # (B, K)
            return ((rewards - batch["labels"]) ** 2 * batch["mask"]).mean()

        def on_train_epoch_start(self) -> None:
            self.epochs_seen.append(self.trainer.train_dataloader.batch_sampler.epoch_batches())

        def training_step(self, batch: dict, i: int) -> torch.Tensor:
            return self._loss(batch)

        def test_step(self, batch: dict, i: int) -> None:
            self.log("test_loss", self._loss(batch), batch_size=batch["mask"].shape[0])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    dm = _dm(tok, write_jsonl(tmp_path / "d.jsonl", strict_rows(40)), batch_size=4)
    model = Tiny()
    trainer = pl.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=tmp_path,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm, verbose=False)
    assert trainer.global_step == 2 * len(dm.train_dataloader())
    assert model.epochs_seen[0] != model.epochs_seen[1]  # Lightning's set_epoch reached the sampler
    assert "test_loss" in trainer.callback_metrics
