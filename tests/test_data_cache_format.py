"""The token cache with main's input format and the `data.cache` switch: a prompt joiner is part of the key;
`data.cache=false` keeps nothing; a run's metrics are the same with the cache built, mapped or off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from data_fixtures import strict_rows, write_jsonl
from test_data_cache import _decoder_tokenizer, mixed_rows

from rankrm.data import cache
from rankrm.data.datamodule import RankDataModule


def _setup(tokenizer: Any, path: Path, root: Path, **kw: Any) -> RankDataModule:
    dm = RankDataModule(tokenizer, {"reader": "jsonl", "path": str(path)}, 0, cache_dir=str(root), **kw)
    dm.setup()
    return dm


def test_each_prompt_joiner_has_its_own_entry(tmp_path: Path) -> None:
    """A decoder joins a text prompt and its response with the joiner: another joiner is another entry
    (other tokens); the same joiner again maps the first."""
    tok = _decoder_tokenizer()
    path = write_jsonl(tmp_path / "d.jsonl", mixed_rows(30))
    plain = _setup(tok, path, tmp_path / "c")
    joined = _setup(tok, path, tmp_path / "c", prompt_joiner="\n\nAnswer: ")
    again = _setup(tok, path, tmp_path / "c")
    stats = [dm.stats["cache"] for dm in (plain, joined, again)]
    assert [s["hit"] for s in stats] == [False, False, True]
    assert stats[0]["dir"] == stats[2]["dir"] != stats[1]["dir"]
    assert stats[1]["tokens"] > stats[0]["tokens"]  # "Answer:" adds tokens to every sequence with a prompt
    assert joined.stats["input_format"] == {"prompt_joiner": "\n\nAnswer: "}


OFF = """
import json, sys
sys.path.insert(0, {tests!r})
from data_fixtures import minilm_tokenizer
from rankrm.data.datamodule import RankDataModule
dm = RankDataModule(minilm_tokenizer(), {{"reader": "jsonl", "path": {path!r}}}, 0, cache=False, cache_dir={root!r})
dm.setup()
store = dm.datasets["train"].store
print(json.dumps({{"path": str(store.path), "exists": store.path.is_dir(), "cache": dm.stats["cache"]}}))
"""


def test_cache_off_builds_a_private_entry_removed_at_exit(tmp_path: Path) -> None:
    path, root = write_jsonl(tmp_path / "d.jsonl", strict_rows(20)), tmp_path / "c"
    root.mkdir()
    dead = root / f".{cache.PRIVATE}-{cache.socket.gethostname()}-999999999-x"  # a killed run's leftover
    dead.mkdir()
    code = OFF.format(tests=str(Path(__file__).parent), path=str(path), root=str(root))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["exists"] and not Path(out["path"]).exists() and not dead.exists()
    assert out["cache"]["on"] is False and out["cache"]["dir"] is None and not out["cache"]["hit"]
    assert sorted(p.name for p in root.iterdir()) == ["digests", "validated"]
    assert not any((root / "validated").iterdir()) and not any((root / "digests").iterdir())  # nothing hashed


def _train(tmp_path: Path, name: str, data: Path, *extra: str) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "rankrm.train", "backbone=tiny_bert", "data=jsonl", f"data.source.path={data}"]
    cmd += ["trainer.max_steps=6", "threads=1", "data.batch_size=4", "export=false", "callbacks.progress_bar=null"]
    cmd += [f"data.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={tmp_path / name}", *extra]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


def _without_run_facts(m: dict[str, Any]) -> dict[str, Any]:
    """metrics.json less what differs between any two runs (wall time) and the cache entry's own facts."""
    m = json.loads(json.dumps(m))
    m.pop("wall_time_s")
    cached = m["data"].pop("cache")
    assert set(cached) == {"on", "dir", "hit", "seconds", "tokens", "bytes"}
    return m


@pytest.mark.slow
def test_metrics_are_the_same_with_the_cache_built_mapped_or_off(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "lists.jsonl", mixed_rows(60))
    built = _train(tmp_path, "built", data)
    mapped = _train(tmp_path, "mapped", data)
    off = _train(tmp_path, "off", data, "data.cache=false")
    assert [m["data"]["cache"]["hit"] for m in (built, mapped, off)] == [False, True, False]
    assert off["data"]["cache"]["on"] is False and built["data"]["cache"]["tokens"] == off["data"]["cache"]["tokens"]
    assert "test" in built and built["train"]["global_steps"] == 6  # the run trained and tested
    assert _without_run_facts(built) == _without_run_facts(mapped) == _without_run_facts(off)
