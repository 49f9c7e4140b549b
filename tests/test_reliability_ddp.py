"""Issue #8, distributed equivalence: `trainer=ddp` with 2 CPU processes (gloo) and data.batch_size=4
trains like one process with data.batch_size=8, and rank 0 alone writes metrics.json and the export.

Why it can match: the batch sampler cuts each global batch of 8 lists into 2 contiguous shards
(step s of the 2 ranks = batch s of the single process), the ranklist loss is a mean over lists and
DDP averages the two ranks' gradients, and gradient clipping sees the averaged gradient. Dropout is
off (`backbone.dropout=0.0`): the ranks draw other masks than one process would. What remains is
float summation order: TOLERANCE below.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_fixtures import strict_rows, write_jsonl

TOLERANCE = 1e-5  # absolute, on every val/test metric
# absolute, on every weight after 8 steps: a quarter of one Adam step at lr 1e-3 (Adam scales each
# gradient by its own running size, so rounding noise in a near-zero gradient moves that weight by
# a fraction of a step; measured: 5e-5 with the for-loop AdamW, 1.1e-4 with the fused one). A wrong
# shard or a doubled batch moves weights by whole steps.
WEIGHT_TOLERANCE = 2.5e-4
COMMON = [
    "backbone=tiny_bert",
    "backbone.dropout=0.0",
    "data=jsonl",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "threads=1",
    "optimizer.lr=1e-3",
    "loss=ranklist",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
]


def run_cli(tmp_path: Path, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    """`python -m rankrm.train` with COMMON and `args`; `pythonpath` is put in front of the inherited one."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (pythonpath, env.get("PYTHONPATH")) if p)
    cmd = [sys.executable, "-m", "rankrm.train", *COMMON, *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def train(tmp_path: Path, name: str, *extra: str) -> Path:
    data = tmp_path / "lists.jsonl"
    if not data.exists():  # 40 lists -> 32 train (4 global batches of 8), 4 val, 4 test
        write_jsonl(data, strict_rows(40))
    run_dir = tmp_path / name
    proc = run_cli(tmp_path, f"data.source.path={data}", f"hydra.run.dir={run_dir}", *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_two_ddp_ranks_train_like_one_process_with_the_global_batch(tmp_path: Path) -> None:
    one = train(tmp_path, "one", "data.batch_size=8")
    two = train(tmp_path, "ddp", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2", "data.batch_size=4")
    m1, m2 = (json.loads((d / "metrics.json").read_text()) for d in (one, two))

    assert m2["train"]["world_size"] == 2 and m1["train"]["world_size"] == 1
    # the counters are global: both runs encoded every training response once per epoch
    assert m1["train"]["sequences_encoded"] == m2["train"]["sequences_encoded"] == 2 * 4 * 32
    assert m1["train"]["global_steps"] == m2["train"]["global_steps"] == 8
    for stage in ("val", "test"):
        assert m1[stage].keys() == m2[stage].keys()
        diffs = {k: abs(m1[stage][k] - m2[stage][k]) for k in m1[stage]}
        assert max(diffs.values()) <= TOLERANCE, (stage, diffs)
        assert m2[stage]["n_lists"] == 4  # under DDP no list is evaluated twice

    w1, w2 = (
        torch.load(d / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
        for d in (one, two)
    )
    worst = max((w1[k].float() - w2[k].float()).abs().max().item() for k in w1 if torch.is_tensor(w1[k]))
    assert worst <= WEIGHT_TOLERANCE, worst

    # rank 0 alone wrote metrics.json and the export (rank 1 logs to its own file)
    logs = {p.name: p.read_text() for p in two.glob("*.log")}
    writers = [name for name, text in logs.items() if "wrote " in text and "metrics.json" in text]
    assert len(logs) == 2 and writers == ["train.log"], logs.keys()
    assert (two / "model" / "model.safetensors").is_file() and not list(two.glob(".model.*"))


@pytest.mark.slow
def test_a_lost_rank_ends_the_run_in_one_line_that_says_how_to_resume(tmp_path: Path) -> None:
    """Rank 1 dies (SIGKILL) at step 3: rank 0 stops within seconds, and instead of gloo's traceback
    (`Connection reset by peer`) says which rank was lost and that resume=true continues."""
    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(40))
    run_dir = tmp_path / "run"
    args = [
        f"data.source.path={data}",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "data.batch_size=2",
        "callbacks.step_checkpoint.every_n_train_steps=1",  # a last.ckpt to resume from
        "+callbacks.kill._target_=ddp_helpers.KillRank",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(tmp_path, *args, pythonpath=str(Path(__file__).resolve().parent))  # tests/: ddp_helpers
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr and proc.stderr.count("rankrm: error:") == 1, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("rankrm: error:"))
    last = run_dir / "checkpoints" / "last.ckpt"
    assert line == (
        "rankrm: error: DDP rank 1 was lost (killed by SIGKILL), so rank 0 stopped too: run the same command "
        f"with resume=true (same hydra.run.dir) to continue from {last}"
    ), line
    assert last.is_file()
