"""The token cache (issue 14): the same batches and stats as the in-memory path, hits and misses,
corrupt and half-written entries, two processes building at once, drops under skip_invalid."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from data_fixtures import (
    CountingTokenizer,
    minilm_tokenizer,
    oasst_tree,
    strict_rows,
    write_jsonl,
    write_vader,
)
from inmemory_reference import epoch_batches, loader_batches, rank_batches, reference
from torch.utils.data import DataLoader

from rankrm.data import cache
from rankrm.data.datamodule import RankDataModule
from rankrm.data.sampler import ListBatchSampler
from rankrm.data.sources import resolve
from rankrm.errors import RankrmError

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return minilm_tokenizer()


def mixed_rows(n: int = 90) -> list[dict[str, Any]]:
    """K 2..5, shared and missing prompts, graded scores with ties, all-tied lists, a few long responses."""
    rows = []
    for i in range(n):
        k = 2 + i % 4
        row: dict[str, Any] = {"responses": [f"reply {i} {j} " + "word " * ((i * 5 + j * 3) % 9) for j in range(k)]}
        if i % 7:
            row["prompt"] = f"prompt {i % 23} " + "context " * (i % 4)  # prompts shared: groups of several lists
        if i % 3 == 0:
            row["scores"] = [float((i + j) % 3) for j in range(k)]  # ties
        if i % 17 == 0:
            row["scores"] = [1.0] * k  # all tied
        if i % 11 == 0:
            row["responses"][0] += " long" * 30
        rows.append(row)
    return rows


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("mixed") / "lists.jsonl", mixed_rows())


DM_KEYS = ("batch_size", "max_tokens", "max_length", "overlong", "truncation_side", "length_grouping", "as_pairs")
DM_KEYS += ("skip_invalid", "limit_train", "limit_val", "limit_test", "prompt_joiner")


def compare(tokenizer: Any, source: dict, tmp_path: Path, epochs: int = 2, **kw: Any) -> RankDataModule:
    """Build the data module on a fresh cache; assert its stats and every batch (each split, epoch and
    rank) equal the in-memory path's."""
    replicas, seed = kw.pop("replicas", 1), kw.get("seed", 0)
    want_stats, want_items = reference(tokenizer, source, replicas=replicas, **kw)
    dm = RankDataModule(tokenizer, source, seed=seed, cache_dir=str(tmp_path / "cache"), **_dm_kw(kw))
    dm.setup()
    got = {k: v for k, v in dm.stats.items() if k in want_stats}
    assert json.loads(json.dumps(got)) == json.loads(json.dumps(want_stats))
    for split, items in want_items.items():
        assert [dm.datasets[split][i] for i in range(len(items))] == [_plain(e) for e in items], split
        for rank in range(replicas):
            for epoch in range(epochs if split == "train" else 1):
                sampler = dm.sampler(split, replicas, rank)
                sampler.set_epoch(epoch)
                got_b = list(DataLoader(dm.datasets[split], batch_sampler=sampler, collate_fn=dm.collator))
                want_b = loader_batches(tokenizer, items, split, epoch, rank, replicas=replicas, **_sampler_kw(kw))
                assert len(got_b) == len(want_b) > 0, (split, rank, epoch)
                for g, w in zip(got_b, want_b):
                    assert g.keys() == w.keys() and all(torch.equal(g[k], w[k]) for k in g), (split, rank, epoch)
    return dm


def _dm_kw(kw: dict) -> dict:
    return {k: v for k, v in kw.items() if k in DM_KEYS}


def _sampler_kw(kw: dict) -> dict:
    return {k: kw[k] for k in ("seed", "batch_size", "max_tokens", "length_grouping") if k in kw}


def _plain(e: Any) -> Any:
    """An EncodedList as the cache gives it back (no source: the cache keeps no text)."""
    return type(e)(e.ids, e.type_ids, e.labels)


CASES = {
    "default": {},
    "as_pairs": {"as_pairs": True},
    "random_batches": {"length_grouping": False, "batch_size": 5},
    "token_budget": {"max_tokens": 120},
    "truncate_left": {"overlong": "truncate", "max_length": 12},
    "truncate_right": {"overlong": "truncate", "max_length": 12, "truncation_side": "right", "as_pairs": True},
    "filter": {"max_length": 16},
    "limits": {"limit_train": 20, "limit_val": 3, "limit_test": 2, "as_pairs": True, "seed": 5},
    "ddp_batches": {"batch_size": 3, "replicas": 2},
    "ddp_budget": {"max_tokens": 90, "replicas": 3, "as_pairs": True},
}


@pytest.mark.parametrize("name", CASES)
def test_cached_batches_equal_the_in_memory_path(tok, mixed: Path, tmp_path: Path, name: str) -> None:
    compare(tok, {"reader": "jsonl", "path": str(mixed)}, tmp_path, **CASES[name])


def _decoder_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from rankrm.backbones import resolve_name_or_path

    t = AutoTokenizer.from_pretrained(resolve_name_or_path("pkg://rankrm/assets/tiny_tokenizer/decoder"))
    t.pad_token = t.pad_token or t.eos_token
    t.padding_side = "left"
    return t


def _source_cases(tmp: Path) -> dict[str, tuple[Any, dict, dict]]:
    chat = [
        {
            "prompt": [{"role": "user", "content": f"turn {i} " + "x " * (i % 6)}],
            "chosen": f"good {i}",
            "rejected": "bad",
        }
        for i in range(30)
    ]
    bad = [*strict_rows(20), {"responses": ["only one"]}, '{"broken', *strict_rows(8, k=3)]
    train, val = write_jsonl(tmp / "tr.jsonl", strict_rows(30, k=3)), write_jsonl(tmp / "va.jsonl", strict_rows(5))
    tsv = tmp / "s.tsv"
    tsv.write_text("".join(f"best {i}\tmid {i}\tworst {i} " + "z " * (i % 7) + "\n" for i in range(30)))
    return {
        "chat_decoder": (
            _decoder_tokenizer(),
            {"reader": "trl_pairs", "path": str(write_jsonl(tmp / "c.jsonl", chat))},
            {},
        ),
        "chat_truncate": (
            _decoder_tokenizer(),
            {"reader": "trl_pairs", "path": str(tmp / "c.jsonl")},
            {"overlong": "truncate", "max_length": 10, "as_pairs": True},
        ),
        "text_decoder_joiner": (  # text prompts on a decoder: one text prompt + joiner + response
            _decoder_tokenizer(),
            {"reader": "jsonl", "path": str(write_jsonl(tmp / "d.jsonl", mixed_rows(40)))},
            {"prompt_joiner": "\n\nAnswer: ", "overlong": "truncate", "max_length": 14},
        ),
        "oasst": (
            None,
            {"reader": "oasst", "path": str(write_jsonl(tmp / "t.jsonl", [oasst_tree(f"T{i}") for i in range(12)]))},
            {},
        ),
        "seed_tsv": (None, {"reader": "seed_tsv", "path": str(tsv)}, {"max_tokens": 40}),
        "vader": (
            None,
            {
                "reader": "vader",
                "data_dir": str(write_vader(tmp / "v")),
                "k": 3,
                "domains": ["tweets", "movie", "amazon"],
            },
            {"seed": 2},
        ),
        "val_file": (None, {"reader": "jsonl", "train": str(train), "val": str(val)}, {"as_pairs": True}),
        "skip_invalid": (
            None,
            {"reader": "jsonl", "path": str(write_jsonl(tmp / "b.jsonl", bad))},
            {"skip_invalid": True},
        ),
    }


@pytest.mark.parametrize(
    "name",
    ["chat_decoder", "chat_truncate", "text_decoder_joiner", "oasst", "seed_tsv", "vader", "val_file", "skip_invalid"],
)
def test_every_source_kind_gives_the_in_memory_batches(tok, tmp_path: Path, name: str) -> None:
    tokenizer, source, kw = _source_cases(tmp_path)[name]
    dm = compare(tokenizer or tok, source, tmp_path, **kw)
    if name == "skip_invalid":
        assert dm.stats["dropped_invalid"] == {"invalid_json": 1, "k<2": 1}


def test_hits_and_misses(tok, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Mapped again for the same content, tokenizer and options (also with another seed: carving and
    shuffling happen on read); built again when the file's content, the tokenizer or an option changes."""
    path = write_jsonl(tmp_path / "d.jsonl", strict_rows(30))
    counting = CountingTokenizer(tok)

    def run(tokenizer: Any = counting, seed: int = 0, **kw: Any) -> dict:
        dm = RankDataModule(
            tokenizer, {"reader": "jsonl", "path": str(path)}, seed, cache_dir=str(tmp_path / "c"), **kw
        )
        dm.setup()
        return dm.stats["cache"]

    first = run()
    calls = sum(counting.seen.values())
    assert not first["hit"] and calls == 30 * 4
    assert run()["hit"] and run(seed=3)["hit"] and run(as_pairs=True, limit_train=5)["hit"]
    path.touch()  # a new mtime, the same bytes: hashed again, same key
    assert run()["dir"] == first["dir"] and sum(counting.seen.values()) == calls
    misses = [run(max_length=64), run(overlong="truncate"), run(truncation_side="right", overlong="truncate")]
    other = minilm_tokenizer()
    other.add_tokens(["newtoken"])
    misses.append(run(other))
    write_jsonl(path, strict_rows(29) + [{"prompt": "changed", "responses": ["a", "b"]}])
    misses.append(run())
    assert not any(m["hit"] for m in misses)
    assert len({m["dir"] for m in [first, *misses]}) == 6
    renamed = {"reader": "jsonl", "path": str(path), "columns": {"prompt": "question"}}  # no such column: same lists
    dm = RankDataModule(tok, renamed, 0, cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert not dm.stats["cache"]["hit"] and dm.stats["cache"]["dir"] != misses[-1]["dir"]


def _built_entry(tok: Any, path: Path, root: Path) -> tuple[RankDataModule, Path]:
    dm = RankDataModule(tok, {"reader": "jsonl", "path": str(path)}, 0, cache_dir=str(root))
    dm.setup()
    return dm, Path(dm.stats["cache"]["dir"])


@pytest.mark.parametrize("damage", ["truncated_tokens", "no_manifest", "bad_offsets"])
def test_a_corrupt_or_half_written_entry_is_rebuilt_with_one_log_line(
    tok, tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", strict_rows(20))
    good, entry = _built_entry(tok, path, tmp_path / "c")
    want = [json.dumps(b["input_ids"].tolist()) for b in good.train_dataloader()]
    if damage == "truncated_tokens":
        data = (entry / "tokens.bin").read_bytes()
        (entry / "tokens.bin").write_bytes(data[: len(data) // 2])
    elif damage == "no_manifest":  # a copy that stopped before its last file
        (entry / "manifest.json").unlink()
    else:
        np.save(entry / "list_offsets.npy", np.zeros(21, dtype=np.int64))  # same size, wrong content
    stale = tmp_path / "c" / f".{entry.name}.tmp-killed"
    stale.mkdir()  # a build killed half way
    with caplog.at_level(logging.INFO, logger="rankrm.data.cache"):
        again, entry2 = _built_entry(tok, path, tmp_path / "c")
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unusable" in warnings[0].getMessage() and str(entry) in warnings[0].getMessage()
    assert entry2 == entry and not again.stats["cache"]["hit"] and not stale.exists()
    assert [json.dumps(b["input_ids"].tolist()) for b in again.train_dataloader()] == want
    assert sorted(p.name for p in (tmp_path / "c").iterdir() if p.name.startswith(".")) == []


BUILD_ONE = """
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {tests!r})
from data_fixtures import minilm_tokenizer
from rankrm.data import cache, tokencache
real = tokencache.tokenize_jobs
def slow(*a, **k):  # a slow build, so the second process arrives while the first builds
    time.sleep(0.3)
    return real(*a, **k)
tokencache.tokenize_jobs = slow
tokencache.CHUNK_SEQS = 8
go = Path({go!r})
while not go.exists():
    time.sleep(0.01)
store, info = cache.open_tokens({source!r}, minilm_tokenizer(), 0, 64, "filter", "left", False, cache_dir={root!r})
print(json.dumps({{"hit": info["hit"], "dir": info["dir"], "tokens": int(store.tokens.sum())}}))
"""


def test_two_processes_building_at_once_both_succeed_and_one_builds(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", strict_rows(24))
    source = {"reader": "jsonl", "path": str(path)}
    go = tmp_path / "go"
    code = BUILD_ONE.format(tests=str(REPO / "tests"), go=str(go), source=source, root=str(tmp_path / "c"))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err[-2000:] for _, err in outs]
    res = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    assert sorted(r["hit"] for r in res) == [False, True]  # one built, the other mapped its files
    assert res[0]["dir"] == res[1]["dir"] and res[0]["tokens"] == res[1]["tokens"] > 0
    assert sum("rankrm data cache: building" in err for _, err in outs) == 1


def test_a_cache_with_drops_stops_a_run_without_skip_invalid(tok, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [*strict_rows(12), {"responses": ["only"]}])
    source = {"reader": "jsonl", "path": str(path)}
    lenient = RankDataModule(tok, source, 0, skip_invalid=True, cache_dir=str(tmp_path / "c"))
    lenient.setup()
    assert lenient.stats["dropped_invalid"] == {"k<2": 1}
    strict = RankDataModule(tok, source, 0, cache_dir=str(tmp_path / "c"))
    with pytest.raises(RankrmError, match=f"{path}:13: field 'responses'"):
        strict.setup()
    with pytest.raises(RankrmError, match=f"{path}:13: field 'responses'"):
        cache.check_source(source, 0, False, str(tmp_path / "c"))


def test_preflight_reads_a_source_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`check_source` streams every record once, then trusts its marker for the same content."""
    path = write_jsonl(tmp_path / "d.jsonl", strict_rows(12))
    source = {"reader": "jsonl", "path": str(path)}
    seen = []
    real = cache.source_lists

    def counted(*args: Any) -> Any:
        seen.append(1)
        yield from real(*args)

    monkeypatch.setattr(cache, "source_lists", counted)
    first = cache.check_source(source, 0, False, str(tmp_path / "c"))
    second = cache.check_source(source, 7, False, str(tmp_path / "c"))
    assert len(seen) == 1 and first.key == second.key and first.facts == {"dropped": {}, "examples": []}
    write_jsonl(path, [*strict_rows(12), {"responses": ["x", "x"], "scores": [1, 2]}])
    with pytest.raises(RankrmError, match=":13: field 'responses"):
        cache.check_source(source, 0, False, str(tmp_path / "c"))
    assert resolve(source).content() == [str(path)]


def test_the_cache_dir_is_configurable_and_must_be_writable(tok, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("RANKRM_DATA_CACHE_DIR", str(tmp_path / "env"))
    assert cache.cache_root(None) == tmp_path / "env" and cache.cache_root(str(tmp_path / "cfg")) == tmp_path / "cfg"
    monkeypatch.delenv("RANKRM_DATA_CACHE_DIR")
    monkeypatch.setenv("RANKRM_CACHE_DIR", str(tmp_path / "root"))
    assert cache.cache_root(None) == tmp_path / "root" / "data"
    (tmp_path / "file").write_text("x")
    with pytest.raises(RankrmError, match="data.cache_dir=.*cannot be created"):
        cache.cache_root(str(tmp_path / "file" / "sub"))


SWEEP = """# @package _global_
params:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
threads_per_trial: 1
train_overrides: [backbone=tiny_bert, data=jsonl, "data.source.path={data}", trainer.max_steps=1, data.batch_size=4,
                  test=false, export=false, callbacks.model_checkpoint=null]
"""


@pytest.mark.slow
def test_a_sweep_of_8_trials_tokenises_once(tmp_path: Path) -> None:
    """Two workers run 8 trials, each a `rankrm.train` process: one builds the cache, seven map it."""
    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(30))
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "tok.yaml").write_text(SWEEP.format(data=data))
    cmd = [sys.executable, "-m", "rankrm.sweep", "--config-dir", str(tmp_path / "conf"), "sweep=tok"]
    cmd += [f"dir={tmp_path / 'sw'}", "n_trials=8", "workers=2"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKRM_DATA_CACHE_DIR": str(tmp_path / "cache")}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = [p.read_text() for p in sorted((tmp_path / "sw" / "trials").glob("*/train.log"))]
    assert len(logs) == 8 and all("wrote " in log for log in logs)
    assert sum(log.count("rankrm data cache: building") for log in logs) == 1
    assert sum(log.count("rankrm data cache: mapped") for log in logs) == 7


@pytest.mark.slow
def test_ddp_ranks_started_together_share_one_build(tmp_path: Path) -> None:
    """Two gloo ranks launched at once (as torchrun or SLURM do): one builds, the other waits and maps."""
    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(40))
    port = 29500 + os.getpid() % 1000
    base = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKRM_DATA_CACHE_DIR": str(tmp_path / "cache")}
    base.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", NODE_RANK="0")
    procs = []
    for rank in range(2):
        cmd = [sys.executable, "-m", "rankrm.train", "backbone=tiny_bert", "data=jsonl", f"data.source.path={data}"]
        cmd += ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.max_steps=2", "threads=1"]
        cmd += ["data.batch_size=4", "test=false", "export=false", "callbacks.progress_bar=null"]
        cmd += [f"hydra.run.dir={tmp_path / 'run'}", f"hydra.job.name=rank{rank}"]
        env = {**base, "LOCAL_RANK": str(rank), "RANK": str(rank)}
        procs.append(
            subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        )
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outs]
    assert sum(o.count("rankrm data cache: building") for o in outs) == 1, outs
    assert sum(o.count("rankrm data cache: mapped") for o in outs) == 1
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["world_size"] == 2 and metrics["data"]["cache"]["dir"].startswith(str(tmp_path / "cache"))


def test_sampler_matches_the_plain_python_batching_on_random_sizes() -> None:
    rng = np.random.default_rng(0)
    for trial in range(200):
        n = int(rng.integers(0, 60))
        sizes = [(int(rng.integers(2, 5)), int(rng.integers(1, 9))) for _ in range(n)]  # many ties
        cfg = {"seed": int(rng.integers(0, 5)), "batch_size": int(rng.integers(1, 6)), "max_tokens": None}
        cfg.update(length_grouping=bool(rng.random() < 0.7), replicas=int(rng.integers(1, 4)))
        if cfg["length_grouping"] and rng.random() < 0.5:
            cfg["max_tokens"] = int(rng.integers(1, 40))
        shuffle = bool(rng.random() < 0.7)
        for rank in range(cfg["replicas"]):
            s = ListBatchSampler(sizes, cfg["batch_size"], cfg["max_tokens"], shuffle, cfg["length_grouping"],
                                 cfg["seed"], cfg["replicas"], rank)  # fmt: skip
            for epoch in range(2):
                s.set_epoch(epoch)
                want = epoch_batches(sizes, cfg, shuffle, epoch)
                assert s.epoch_batches() == want, (trial, cfg)
                assert list(s) == rank_batches(want, cfg, rank) and len(s) == len(list(s)), (trial, cfg)


def test_a_split_pickles_as_its_cache_path(tok, tmp_path: Path) -> None:
    """DataLoader workers started with spawn get the split by pickle: the maps reopen, nothing is copied."""
    dm, _ = _built_entry(tok, write_jsonl(tmp_path / "d.jsonl", strict_rows(200)), tmp_path / "c")
    train = dm.datasets["train"]
    blob = pickle.dumps(train)
    again = pickle.loads(blob)
    assert len(blob) < train.store.tokens.nbytes and list(again) == list(train)


def test_a_hub_dataset_is_keyed_by_its_datasets_fingerprints(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    import datasets

    from rankrm.data.cachekey import source_key

    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    prints = {"train": "aaa", "test": "bbb"}
    loaded = []

    def load_dataset(path, name=None, split=None, revision=None):  # datasets.load_dataset, recorded
        loaded.append((path, name, split, revision))
        return {s: SimpleNamespace(_fingerprint=f) for s, f in prints.items()}

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    r = resolve({"reader": "hf", "path": "org/prefs", "revision": "v1"})
    first = source_key(r, 0, tmp_path)
    assert source_key(r, 5, tmp_path)[0] == first[0] and loaded[0] == ("org/prefs", None, None, "v1")
    prints["train"] = "ccc"  # new content upstream (or another revision): another key
    assert source_key(r, 0, tmp_path)[0] != first[0]
