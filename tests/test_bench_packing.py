"""Smoke tests of scripts/bench_packing.py (issue 18), so it cannot rot: `--quick` with tiny backbones on
tiny OASST / VADER files written here. Nothing is timed; the checks are about what was measured: every
rankrm mode trained the same model (same val metrics), `shared_prompt` encoded exactly the limit P + sum R,
packed rows held no padding, TRL encoded more, and the val lists do not depend on the train size."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from data_fixtures import VADER_FILES, oasst_tree, write_jsonl, write_vader

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import bench_common as bc  # noqa: E402

HAS_TRL = importlib.util.find_spec("trl") is not None


def bench(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "out.json"
    cmd = [sys.executable, str(REPO / "scripts" / "bench_packing.py"), "--quick", "--threads", "1"]
    cmd += ["--workdir", str(tmp_path / "work"), "--out", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1200, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert "| none |" in result["markdown"] and "load average" in result["markdown"]
    return result


def check_rankrm_rows(rows: dict[str, dict[str, Any]], data: dict[str, Any]) -> None:
    none = rows["none"]
    assert none["train_lists"] == none["lists_trained"] == 8
    for name, r in rows.items():
        if name == "trl":
            continue
        assert r["val_pair_acc"] == pytest.approx(none["val_pair_acc"], abs=1e-6), name  # exact modes: one model
        assert r["val_n_lists"] == data["val_lists"]
        assert r["lists_per_s"] > 0 and r["peak_rss_mb"] > 0
        assert r["limit_per_list"] == pytest.approx(data["limit_per_list"])
    assert none["tokens_per_list"] == pytest.approx(data["tokens_per_list_unshared"])
    assert rows["lists"]["tokens_per_list"] == none["tokens_per_list"] and rows["lists"]["padded_per_list"] == 0


@pytest.mark.slow
def test_bench_packing_on_dialogues_reaches_the_limit_and_compares_with_trl(tmp_path: Path) -> None:
    trees = write_jsonl(tmp_path / "trees.jsonl", [oasst_tree(f"t{i}") for i in range(40)])
    systems = ["none", "lists", "shared_prompt", "shared_prompt_dense"] + (["trl"] if HAS_TRL else [])
    res = bench(
        tmp_path, "--backbone", "tiny_qwen", "--data", "oasst", "--oasst-path", str(trees), "--systems", *systems
    )
    data = res["data"]
    assert data["dropped_over_max_length"] == {"pool": 0, "val": 0} and data["causal"] is None
    rows = {r["system"]: r for r in res["rows"]}
    assert set(rows) == set(systems)
    check_rankrm_rows(rows, data)
    for name in ("shared_prompt", "shared_prompt_dense"):  # each common prefix once: exactly the limit
        assert rows[name]["tokens_per_list"] == pytest.approx(data["limit_per_list"])
    assert data["limit_per_list"] < data["tokens_per_list_unshared"]
    assert rows["shared_prompt"]["padded_per_list"] == 0 < rows["shared_prompt_dense"]["padded_per_list"]
    if HAS_TRL:
        assert rows["trl"]["tokens_per_list"] > rows["none"]["tokens_per_list"]  # pairs re-encode responses
        assert rows["trl"]["pairs_dropped_by_max_length"] == 0
        equal = {r["system"]: r for r in res["equal_time"]}
        assert set(equal) == set(systems)
        for name, r in equal.items():
            assert 2 <= r["train_lists"] <= data["pool_lists"] and r["val_n_lists"] == data["val_lists"], name


@pytest.mark.slow
def test_bench_packing_on_vader_skips_shared_prompt_for_an_encoder(tmp_path: Path) -> None:
    vader = write_vader(tmp_path / "vader", n=80, domains=tuple(VADER_FILES))
    res = bench(
        tmp_path,
        "--backbone",
        "tiny_bert",
        "--data",
        "vader",
        "--vader-dir",
        str(vader),
        "--k",
        "3",
        "--systems",
        "none",
        "lists",
        "shared_prompt",
        "--no-equal-time",
    )
    rows = {r["system"]: r for r in res["rows"]}
    assert set(rows) == {"none", "lists"} and "skipped (encoder): shared_prompt" in res["markdown"]
    check_rankrm_rows(rows, res["data"])
    assert res["data"]["limit_per_list"] == res["data"]["tokens_per_list_unshared"]  # no prompt to share
    assert res["equal_time"] == []


def test_vader_val_lists_do_not_depend_on_the_train_size(tmp_path: Path) -> None:
    vader = write_vader(tmp_path / "vader", n=80, domains=tuple(VADER_FILES))
    files = [bc.prepare_vader_lists(str(vader), 3, n, 4, 0, tmp_path / f"n{n}", 0.25) for n in (6, 12)]
    assert Path(files[0]["val"]).read_text() == Path(files[1]["val"]).read_text()
    assert Path(files[0]["train"]).read_text() != Path(files[1]["train"]).read_text()
