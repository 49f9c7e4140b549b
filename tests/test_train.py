"""Training smoke tests through the real CLI (`python -m rankrm.train`) with tiny backbones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_fixtures import strict_rows, write_jsonl
from hydra import compose, initialize_config_dir

from rankrm import CONF_DIR
from rankrm.backbones import build_reward_model
from rankrm.config import validate
from rankrm.errors import RankrmError

CONF = str(CONF_DIR)
METRIC_KEYS = {"pair_acc", "kendall_tau", "ndcg", "ndcg@1", "ndcg@3", "top1_acc", "exact_order", "loss"}


def run_cli(args: list[str], cwd: Path, module: str = "rankrm.train") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def tiny_run(tmp_path: Path, backbone: str, *extra: str) -> tuple[Path, subprocess.CompletedProcess[str]]:
    data = write_jsonl(tmp_path / "lists.jsonl", strict_rows(40, k=4))
    run_dir = tmp_path / "run"
    args = [
        f"backbone={backbone}",
        "data=jsonl",
        f"data.source.path={data}",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "optimizer.lr=1e-2",
        "scheduler.warmup_ratio=0.0",
        "threads=1",
        f"hydra.run.dir={run_dir}",
        *extra,
    ]
    return run_dir, run_cli(args, tmp_path)


def initial_state(backbone: str, *overrides: str) -> dict[str, torch.Tensor]:
    """The weights a tiny backbone starts from (tiny models are built with a fixed seed)."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"backbone={backbone}", *overrides])
    model, _ = build_reward_model(cfg.backbone)
    return {f"model.{k}": v.detach().clone() for k, v in model.state_dict().items() if torch.is_tensor(v)}


def trained_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return ckpt["state_dict"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "backbone,extra",
    [
        ("tiny_bert", ()),
        ("tiny_ernie", ()),
        ("tiny_qwen", ()),
        ("tiny_qwen", ("backbone.gradient_checkpointing=true",)),
    ],
)
def test_cli_trains_every_parameter(tmp_path: Path, backbone: str, extra: tuple[str, ...]) -> None:
    run_dir, proc = tiny_run(tmp_path, backbone, *extra)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = initial_state(backbone), trained_state(run_dir)
    # Parameters that get no gradient by construction: BERT's pooler is unused by cls/mean only,
    # and position/type embeddings beyond the longest input are never looked up.
    unchanged = [
        k
        for k, v in before.items()
        if v.is_floating_point() and torch.equal(v, after[k]) and "position" not in k and "token_type" not in k
    ]
    assert not unchanged, f"parameters did not train: {unchanged}"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert METRIC_KEYS <= set(metrics["val"]) and METRIC_KEYS <= set(metrics["test"])
    assert 0.0 <= metrics["val"]["pair_acc"] <= 1.0 and -1.0 <= metrics["test"]["kendall_tau"] <= 1.0
    assert metrics["data"]["train"]["lists"] > 0 and metrics["data"]["dropped_invalid"] == {}
    assert metrics["train"]["sequences_encoded"] == 4 * metrics["data"]["train"]["lists"]
    assert metrics["wall_time_s"] > 0 and metrics["best_checkpoint"].endswith(".ckpt")
    assert (run_dir / "model" / "model.safetensors").is_file()
    assert (run_dir / ".hydra" / "config.yaml").is_file() and (run_dir / "csv" / "metrics.csv").is_file()


@pytest.mark.slow
def test_head_only_trains_the_head_alone(tmp_path: Path) -> None:
    run_dir, proc = tiny_run(tmp_path, "tiny_bert", "backbone.freeze=head_only", "export=false", "test=false")
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = initial_state("tiny_bert"), trained_state(run_dir)
    changed = {k for k, v in before.items() if v.is_floating_point() and not torch.equal(v, after[k])}
    assert changed and all(k.startswith("model.head.") for k in changed), changed
    assert "parameters:" in proc.stderr + proc.stdout


@pytest.mark.slow
def test_exported_model_scores_like_the_checkpoint(tmp_path: Path) -> None:
    """The run's export, reloaded by transformers, gives the scores `rankrm.score` prints; it records the val
    reward statistics (`rankrm.score --stats` on the val file gives them again) and has a model card."""
    val = write_jsonl(tmp_path / "val.jsonl", strict_rows(12, k=4))
    split = [f"data.source.train={tmp_path / 'lists.jsonl'}", f"data.source.val={val}", "data.source.path=null"]
    run_dir, proc = tiny_run(tmp_path, "tiny_bert", "test=false", *split)
    assert proc.returncode == 0, proc.stderr[-3000:]
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    hf = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    texts = ["answer 1 0 word word", "answer 1 3"]
    with torch.no_grad():
        expected = hf(**tok(texts, return_tensors="pt", padding=True)).logits[:, 0]
    ranked = run_cli([str(run_dir / "model"), *texts, "--rank"], tmp_path, module="rankrm.score")
    assert ranked.returncode == 0, ranked.stderr
    rows = [line.split("\t") for line in ranked.stdout.strip().splitlines()]  # rank, score, text
    assert [r[2] for r in rows] == [texts[i] for i in expected.argsort(descending=True).tolist()]
    assert [float(r[1]) for r in rows] == pytest.approx(sorted(expected.tolist(), reverse=True), abs=1e-5)
    meta = json.loads((run_dir / "model" / "rankrm.json").read_text())
    assert meta["input_format"] == {"prompt_joiner": ""} and meta["reward_stats"]["n"] == 12 * 4
    stats = run_cli([str(run_dir / "model"), "--stats", str(val)], tmp_path, module="rankrm.score")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["mean"] == pytest.approx(meta["reward_stats"]["scores"]["mean"], abs=1e-5)
    assert json.loads(stats.stdout)["std"] == pytest.approx(meta["reward_stats"]["scores"]["std"], abs=1e-5)
    card = (run_dir / "model" / "README.md").read_text()
    pair_acc = json.loads((run_dir / "metrics.json").read_text())["val"]["pair_acc"]
    assert f"pair_acc {pair_acc:.4f}" in card and "## Use it" in card and "rankrm.reward_function" in card


SHIPPED = [
    (group, p.stem)
    for group in ["data", "backbone", "loss", "optimizer", "scheduler", "trainer", "logger", "callbacks", "experiment"]
    for p in sorted(Path(CONF, group).glob("*.yaml"))
    if p.stem != "base"  # conf/loss/base.yaml: settings every loss starts from, not a loss (loss=base is refused)
]
NEEDS = {("trainer", "fsdp"): ["export=false"]}  # as fsdp.yaml says: FSDP shards the weights, no export


@pytest.mark.parametrize("group, option", SHIPPED, ids=[f"{g}={o}" for g, o in SHIPPED])
def test_every_shipped_option_is_valid(group: str, option: str) -> None:
    """Each option of each config group composes with the defaults and passes the schema (every field's
    type and range, unknown keys, cross-field rules), so a typo in a shipped yaml fails here.
    No run: that is the CLI tests' job."""
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}", *NEEDS.get((group, option), [])])
    validate(cfg)


def test_a_typo_in_a_shipped_yaml_fails_the_check(tmp_path: Path) -> None:
    """The check above can fail: qwen.yaml with `pooling: last_tokn` (a copy on the search path) is refused."""
    (tmp_path / "backbone").mkdir()
    text = (Path(CONF) / "backbone" / "qwen.yaml").read_text().replace("pooling: last_token", "pooling: last_tokn")
    (tmp_path / "backbone" / "qwen_typo.yaml").write_text(text)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose("train", overrides=["backbone=qwen_typo", f"hydra.searchpath=[file://{tmp_path}]"])
    with pytest.raises(RankrmError, match="backbone.pooling must be one of .*, got 'last_tokn'"):
        validate(cfg)


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_warmup_decay_schedule(decay: str) -> None:
    from rankrm.schedules import warmup_decay

    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    sched = warmup_decay(opt, total_steps=20, warmup_ratio=0.25, decay=decay)
    lrs = []
    for _ in range(20):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([2.0 * (s + 1) / 6 for s in range(5)])  # warmup: 5 steps
    assert lrs[5] == pytest.approx(2.0) and max(lrs) == pytest.approx(2.0)
    if decay == "constant":
        assert lrs[5:] == pytest.approx([2.0] * 15)
    else:
        assert all(a >= b for a, b in zip(lrs[5:], lrs[6:])) and lrs[-1] < 0.3
