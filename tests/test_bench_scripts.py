"""Smoke tests of the benchmark scripts (issue #7), so they cannot rot.

Each script runs end to end in `--quick` mode with the tiny backbone on tiny VADER-format
files written here (no real data). Nothing is timed: the checks are about what was measured
(every system saw the same pairs and was scored on the same held-out lists, the DDP run kept
the global batch), not how fast.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from data_fixtures import VADER_FILES, write_vader
from script_modules import load

from rankrm.losses import LOSSES

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def vader_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # 80 texts per domain: enough for 8 train + 4 val lists of K=3 at the scripts' min_gap.
    return write_vader(tmp_path_factory.mktemp("vader"), n=80, domains=tuple(VADER_FILES))


def run_script(name: str, tmp_path: Path, vader_dir: Path | None, *extra: str) -> dict[str, Any]:
    """`python scripts/<name> --quick` (tiny_bert on the tiny VADER files unless `extra` says otherwise)."""
    out = tmp_path / "out.json"
    data = ["--backbone", "tiny_bert"] + (["--vader-dir", str(vader_dir)] if vader_dir else [])
    cmd = [sys.executable, str(REPO / "scripts" / name), "--quick", *data, "--workdir", str(tmp_path / "work")]
    cmd += ["--out", str(out), *extra]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "| " in result["markdown"] and "load average" in result["markdown"]
    assert len(result["machine"]["loadavg_1_5_15"]) == 3
    return result


def test_vader_dir_comes_from_the_flag_the_env_or_the_data_root(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bc = load("scripts", "bench_common")
    monkeypatch.delenv("RANKRM_VADER_DIR", raising=False)
    monkeypatch.setenv("RANKRM_DATA_DIR", str(tmp_path))
    assert bc.vader_dir(None) is None  # no folder under the data root: rankrm's lookup (user cache) decides
    (tmp_path / "vader-human-sentiment").mkdir()
    assert bc.vader_dir(None) == str(tmp_path / "vader-human-sentiment")
    monkeypatch.setenv("RANKRM_VADER_DIR", "/elsewhere")
    assert bc.vader_dir(None) == "/elsewhere" and bc.vader_dir("/flag") == "/flag"


@pytest.mark.parametrize("ckpt", [(), ("--gradient-checkpointing",)])
def test_bench_trl_systems_see_the_same_pairs_and_val_lists(
    tmp_path: Path, vader_dir: Path, ckpt: tuple[str, ...]
) -> None:
    systems = ["rankrm_ranklist", "rankrm_pairwise"] + (["trl"] if importlib.util.find_spec("trl") else [])
    res = run_script("bench_trl.py", tmp_path, vader_dir, "--threads", "1", "--systems", *systems, *ckpt)
    assert ("gradient checkpointing" in res["markdown"]) == bool(ckpt)
    rows = {r["system"]: r for r in res["rows"]}
    assert set(rows) == set(systems)
    for r in rows.values():
        assert r["k"] == 3
        assert r["pairs"] == 8 * 3  # 8 lists x C(3, 2) pairs, none dropped
        assert r["lists"] == 8
        assert r["steps"] == 4  # 2 lists per batch (6 pairs for the pair systems)
        assert r["val_n_lists"] == 4 and r["val_n_pairs"] == 12  # the same held-out lists for all
        assert 0.0 <= r["val_pair_acc"] <= 1.0 and -1.0 <= r["val_kendall_tau"] <= 1.0
        assert 0.0 <= r["pad_share"] < 1.0
        assert r["lists_per_s"] > 0 and r["peak_rss_mb"] > 0
    if "trl" in rows:
        assert rows["trl"]["speedup_vs_trl"] == pytest.approx(1.0)
        assert rows["trl"]["pairs_dropped_by_max_length"] == 0


def test_bench_overhead_reports_all_three_parts(tmp_path: Path, vader_dir: Path) -> None:
    res = run_script("bench_overhead.py", tmp_path, vader_dir, "--threads", "1")
    over = res["overhead"]
    assert over["steps"] == 4  # 8 lists, 2 per batch
    assert over["bare_s"] > 0 and over["lightning_loop_s"] > 0 and over["fit_over_bare"] > 0
    assert [r["batching"] for r in res["padding"]] == ["untrained (reference)", "length-grouped", "random"]
    for r in res["padding"][1:]:
        assert 0.0 <= r["pad_share"] < 1.0 and 0.0 <= r["val_pair_acc"] <= 1.0
    parts = {r["part"]: r for r in res["step_parts"]}
    assert {"forward", "loss", "backward_opt", "metrics", "step"} <= set(parts)
    assert {f"loss {name} fwd+bwd" for name in LOSSES} <= set(parts)
    assert all(math.isfinite(r["share_of_step"]) and r["share_of_step"] > 0 for r in parts.values())


def test_bench_ddp_runs_two_ranks_with_the_same_global_batch(tmp_path: Path, vader_dir: Path) -> None:
    res = run_script("bench_ddp.py", tmp_path, vader_dir)
    rows = {r["config"]: r for r in res["rows"]}
    assert set(rows) == {"trainer=cpu threads=2", "trainer=ddp devices=2"}
    single, ddp = rows["trainer=cpu threads=2"], rows["trainer=ddp devices=2"]
    assert single["ranks_reporting"] == 1 and ddp["ranks_reporting"] == 2
    assert ddp["world_size"] == 2 and ddp["per_rank_batch"] == 1 and ddp["threads"] == 1
    # Global batch 2 lists: 4 steps over 8 lists, whether one process takes 2 or two take 1 each.
    assert single["steps"] == ddp["steps"] == 4
    assert single["train_lists"] == ddp["train_lists"] == 8
    assert ddp["rss_sum_mb"] > single["peak_rss_rank_mb"]


def test_bench_memory_compares_checkpointing_off_and_on(tmp_path: Path) -> None:
    res = run_script("bench_memory.py", tmp_path, None, "--backbone", "tiny_qwen", "--threads", "1")
    off, on = res["rows"]
    assert (off["gradient_checkpointing"], on["gradient_checkpointing"]) == ("off", "on")
    assert off["sequences"] == on["sequences"] == "6 x 16"  # 2 lists x K=3, 16 tokens
    # The same weights, batch and seed: checkpointing changes memory and time, not the training.
    assert on["loss_first"] == pytest.approx(off["loss_first"], abs=2e-4)  # (rounded to 4 places)
    assert on["loss_last"] == pytest.approx(off["loss_last"], abs=2e-4)
    assert off["loss_last"] < off["loss_first"]  # the steps trained
    assert all(r["peak_rss_mb"] >= r["setup_rss_mb"] > 0 and r["step_s"] > 0 for r in res["rows"])
    assert res["peak_rss_on_over_off"] > 0 and "load average" in res["markdown"]


def test_bench_e5_steps_compares_the_e5_settings_beside_minilm(tmp_path: Path) -> None:
    """--quick: every system on tiny_bert (frozen word table, head-only, full) over a synthetic TSV."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_e5_steps.py"), "--quick", "--threads", "1", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["name"]: r for r in result["rows"]}
    assert set(rows) == {"e5_full", "e5_frozen_word_emb", "e5_head_only", "minilm_full"}
    assert rows["e5_frozen_word_emb"]["trainable_m"] < rows["e5_full"]["trainable_m"] == rows["e5_full"]["params_m"]
    assert rows["e5_head_only"]["trainable_m"] < rows["e5_frozen_word_emb"]["trainable_m"]
    assert all(r["step_s"] > 0 and r["peak_rss_mb"] > 0 for r in rows.values())
    assert "load average" in result["markdown"]


def test_bench_data_builds_maps_and_runs_the_in_memory_path_side_by_side(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_data.py"), "--quick", "--backbone", "tiny_bert", "--cli"]
    cmd += ["--threads", "1", "--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (row,) = json.loads(out.read_text())["rows"]
    build, (cached,), (before,) = row["runs"]["build"], row["runs"]["cached"], row["runs"]["before"]
    assert build["cache_hit"] is False and cached["cache_hit"] is True and before["cache_hit"] is None
    # the three paths hand the first step the same batch of the same training lists
    assert build["batch_shape"] == cached["batch_shape"] == before["batch_shape"]
    assert build["epoch_batches"] == cached["epoch_batches"] == before["epoch_batches"] == 4  # 32 lists, 8 a batch
    assert row["cached_epoch_s"] > 0 and row["before_epoch_s"] > 0
    assert build["train_lists"] == cached["train_lists"] == before["train_lists"] == 32  # 40 lists, 0.8 train
    assert row["tokens"] == build["cache_tokens"] == row["runs"]["bare"]["tokens"] > 0  # the same texts
    assert row["build_tok_s"] > 0 and row["bare_tok_s"] > 0 and row["cached_s"] > 0 and row["before_s"] > 0
    assert row["cli_rss_mb"] > 0 and row["cli_small_rss_mb"] > 0
    # --cli-only measures the CLI columns again on the same data and caches, and keeps the rest
    proc = subprocess.run(cmd + ["--cli-only"], capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert "cli_machine" in res and res["rows"][0]["runs"] == row["runs"] and res["rows"][0]["cli_rss_mb"] > 0


def test_bench_token_storage_reads_the_same_batches_from_each_layout(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_token_storage.py"), "--quick", "--backbone", "tiny_bert"]
    cmd += ["--workdir", str(tmp_path / "work"), "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert [r["layout"] for r in res["rows"]] == ["numpy", "arrow", "datasets"]
    assert all(r["batch_us"] > 0 and r["mb"] > 0 and r["same_batch_as_numpy"] for r in res["rows"])
