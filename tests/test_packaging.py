"""The wheel works on its own: built from the repo, installed (not editable) into a fresh venv, its four
entry points run from an empty directory with a tiny backbone and tiny data: `rankrm-train` (with a
user config dir on Hydra's search path), `rankrm-sweep` (whose trial is `python -m rankrm.train`) and
`rankrm-score` on the trained export. The venv sees the test environment's dependencies (torch,
transformers...) through a .pth file, so nothing is downloaded; rankrm itself comes only from the wheel."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest
from data_fixtures import strict_rows, write_jsonl

import rankrm

REPO = Path(rankrm.__file__).resolve().parents[1]
SHIPPED = ["rankrm", "hydra_plugins", "pyproject.toml", "README.md", "LICENSE"]
USER_BACKBONE = """defaults:
  - tiny_bert
  - _self_
length_buckets: 2
"""
USER_SWEEP = """# @package _global_
n_trials: 1
objectives:
  - {{metric: val/pair_acc, direction: maximize}}
params:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
threads_per_trial: 1
train_overrides: [backbone=tiny_bert, data=jsonl, "data.source.path={data}", trainer.max_steps=2, data.batch_size=4]
"""


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (cmd, proc.stdout[-2000:], proc.stderr[-3000:])
    return proc


def install_wheel(tmp_path: Path, env: dict[str, str]) -> Path:
    """Build the wheel from a copy of what it ships (the build leaves nothing in the checkout) and install
    it into a fresh venv; returns the venv's site-packages."""
    src = tmp_path / "src"
    src.mkdir()
    for name in SHIPPED:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, src / name)
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--no-input"]
    run([*pip, "wheel", str(src), "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist")], tmp_path, env)
    wheel = next((tmp_path / "dist").glob("rankrm-*.whl"))
    py = tmp_path / "venv" / "bin" / "python"
    run([sys.executable, "-m", "venv", "--without-pip", str(py.parents[1])], tmp_path, env)
    where_cmd = [str(py), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]
    purelib = Path(run(where_cmd, tmp_path, env).stdout.strip())
    # The dependencies come from the test environment; its .pth files (an editable rankrm) are not read.
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    run([*pip, "--python", str(py), "install", "--no-deps", "--no-index", str(wheel)], tmp_path, env)
    return purelib


@pytest.mark.slow
def test_wheel_runs_its_entry_points_from_an_empty_directory(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    purelib = install_wheel(tmp_path, env)
    venv = tmp_path / "venv"
    py = venv / "bin" / "python"

    empty = tmp_path / "empty"
    empty.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env['PATH']}"
    where = run([str(py), "-c", "import rankrm; print(rankrm.__file__, rankrm.CONF_DIR)"], empty, env).stdout
    assert where.startswith(str(purelib)) and (purelib / "rankrm" / "conf" / "README.md").is_file(), where

    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(40))
    conf = tmp_path / "my_conf"
    (conf / "backbone").mkdir(parents=True)
    (conf / "backbone" / "mine.yaml").write_text(USER_BACKBONE)
    (conf / "sweep").mkdir()
    (conf / "sweep" / "tiny.yaml").write_text(USER_SWEEP.format(data=data))
    common = ["data=jsonl", f"data.source.path={data}", "data.batch_size=4", "trainer.max_steps=2", "threads=1"]

    run(["rankrm-train", "--config-dir", str(conf), "backbone=mine", *common, "hydra.run.dir=run"], empty, env)
    metrics = json.loads((empty / "run" / "metrics.json").read_text())
    assert metrics["train"]["global_steps"] == 2 and (empty / "run" / "model" / "model.safetensors").is_file()
    bad = subprocess.run(
        ["rankrm-train", "backbone.pooling=last_tokn"], cwd=empty, env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and bad.stderr.startswith("rankrm: error: backbone.pooling must be one of"), bad.stderr

    run(["rankrm-sweep", "sweep=tiny", f"hydra.searchpath=[file://{conf}]", "dir=sw"], empty, env)
    trial = json.loads((empty / "sw" / "trials" / "0" / "metrics.json").read_text())  # python -m rankrm.train
    assert trial["train"]["global_steps"] == 2

    texts = ["answer 1 0 word", "answer 1 3"]
    scored = run(["rankrm-score", "run/model", *texts], empty, env).stdout.strip().splitlines()
    assert [line.split("\t")[-1] for line in scored] == texts, scored
