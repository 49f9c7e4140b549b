"""A loss's learned parameter (the tie models' tie) in the LightningModule: trained with its own learning
rate, in every checkpoint, kept on resume, written to the export; and the tie models through the real CLI
on graded data with ties (including VADER's `grade_step`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from data_fixtures import VADER_FILES, write_jsonl, write_vader
from test_train import run_cli

from rankrm.losses import LOSSES
from rankrm.module import RankRMModule


class _Scorer(torch.nn.Module):
    """Stands in for RewardModel: a linear score of a fixed feature per sequence."""

    def __init__(self) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3, 1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids=None) -> torch.Tensor:
        return self.head(input_ids.float()).squeeze(-1)


def _module(loss: str, **kwargs) -> RankRMModule:
    return RankRMModule(_Scorer(), loss, kwargs, optimizer=lambda params: torch.optim.AdamW(params, lr=1e-3))


def test_learned_tie_is_a_log_parameter_with_its_own_lr_and_no_weight_decay():
    module = _module("bt_ties_davidson", tie=0.5, learn_tie=True, tie_lr=0.2)
    assert module.loss_kwargs == {"tie": 0.5} and module.loss_param_lrs == {"tie": 0.2}
    assert module.state_dict()["loss_params.log_tie"].item() == pytest.approx(math.log(0.5))
    module.trainer = None  # configure_optimizers reads no trainer without a scheduler
    groups = module.configure_optimizers()["optimizer"].param_groups
    assert [g["lr"] for g in groups] == [1e-3, 0.2] and groups[1]["weight_decay"] == 0.0
    assert groups[1]["params"] == [module.loss_params["log_tie"]]
    assert module.loss_metadata() == {"name": "bt_ties_davidson", "kwargs": {"tie": 0.5}, "learned": ["tie"]}


def test_fixed_tie_adds_no_parameter_and_the_loss_sees_the_current_value():
    fixed = _module("bt_ties_rao_kupper", tie=0.9)
    assert not list(fixed.loss_params.parameters()) and fixed.current_loss_kwargs() == {"tie": 0.9}
    learned = _module("bt_ties_rao_kupper", tie=0.9, learn_tie=True)
    with torch.no_grad():
        learned.loss_params["log_tie"].fill_(math.log(2.0))
    assert learned.current_loss_kwargs()["tie"].item() == pytest.approx(2.0)
    rewards, labels = torch.tensor([[0.3, 0.1, -0.4]]), torch.tensor([[1.0, 1.0, 0.0]])
    batch = {"labels": labels, "mask": torch.ones(1, 3, dtype=torch.bool)}
    expected = LOSSES["bt_ties_rao_kupper"](rewards, labels, batch["mask"], tie=2.0)
    torch.testing.assert_close(learned._loss(rewards, batch), expected)


def _graded_rows(n: int) -> list[dict]:
    """Lists of 4 with tied scores (every list holds a tie) and varied texts."""
    scores = [[3, 2, 2, 0], [2, 1, 1, 1], [4, 4, 1, 0]]
    return [
        {
            "prompt": f"question {i}?",
            "responses": [f"answer {i} {j} " + "word " * ((i * 3 + j * 5) % 7) for j in range(4)],
            "scores": scores[i % 3],
        }
        for i in range(n)
    ]


def _tie_run(tmp_path: Path, run: str, *extra: str):
    data = tmp_path / "graded.jsonl"
    if not data.exists():
        write_jsonl(data, _graded_rows(48))
    args = [
        "backbone=tiny_bert",
        "data=jsonl",
        f"data.source.path={data}",
        "data.batch_size=4",
        "optimizer.lr=1e-2",
        "scheduler.warmup_ratio=0.0",
        "threads=1",
        "loss=bt_ties_davidson",
        "loss.kwargs.learn_tie=true",
        "loss.kwargs.tie_lr=0.1",
        f"hydra.run.dir={tmp_path / run}",
        *extra,
    ]
    return run_cli(args, tmp_path)


def _log_tie(run_dir: Path) -> float:
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    return state["loss_params.log_tie"].item()


@pytest.mark.slow
def test_cli_learns_the_tie_checkpoints_and_exports_it(tmp_path: Path):
    proc = _tie_run(tmp_path, "run", "trainer.max_epochs=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "run"
    log_tie = _log_tie(run_dir)
    assert log_tie != 0.0  # moved from log(1.0)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for split in ("val", "test"):
        assert {"tie", "tie_auc", "outcome_acc", "tie_nll", "outcome_nll", "n_tied_pairs"} <= set(metrics[split])
        assert metrics[split]["n_tied_pairs"] > 0 and 0 <= metrics[split]["outcome_acc"] <= 1
    exported = json.loads((run_dir / "model" / "rankrm.json").read_text())["loss"]
    assert exported["name"] == "bt_ties_davidson" and exported["learned"] == ["tie"]
    # the export holds the best checkpoint's tie, which the final metrics report
    assert exported["kwargs"]["tie"] == pytest.approx(metrics["val"]["tie"], rel=1e-6)


@pytest.mark.slow
def test_resume_continues_from_the_checkpointed_tie(tmp_path: Path):
    # A constant learning rate: the schedule of a 1-epoch run would otherwise differ from a 2-epoch one's.
    same = ("export=false", "test=false", "scheduler.decay=constant")
    straight = _tie_run(tmp_path, "straight", "trainer.max_epochs=2", *same)
    first = _tie_run(tmp_path, "resumed", "trainer.max_epochs=1", *same)
    assert straight.returncode == 0 and first.returncode == 0, (straight.stderr + first.stderr)[-3000:]
    after_one = _log_tie(tmp_path / "resumed")
    again = _tie_run(tmp_path, "resumed", "trainer.max_epochs=2", "resume=true", *same)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _log_tie(tmp_path / "resumed") != after_one
    assert _log_tie(tmp_path / "resumed") == _log_tie(tmp_path / "straight")  # as if never stopped


@pytest.mark.slow
def test_vader_grade_step_makes_ties_the_tie_ablation_trains_on(tmp_path: Path):
    vader = write_vader(tmp_path / "vader", n=120, domains=tuple(VADER_FILES))
    proc = run_cli(
        [
            "backbone=tiny_bert",
            f"data.source.data_dir={vader}",
            "data.source.min_gap=0.0",
            "data.source.grade_step=1.0",
            "loss=bt_ties_rao_kupper",
            "trainer.max_steps=2",
            "threads=1",
            "export=false",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["val"]["n_tied_pairs"] > 0 and "tie_nll" in metrics["val"]
    bad = run_cli(["data.source.grade_step=0", f"data.source.data_dir={vader}"], tmp_path)
    assert bad.returncode != 0 and "grade_step" in bad.stderr and "Traceback" not in bad.stderr
