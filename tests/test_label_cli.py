"""`python -m rankrm.label` through the real CLI: config errors, mode=summary with two annotators,
mode=generate with a tiny decoder, and training on the file it writes (`data=jsonl`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import write_jsonl
from test_label import item, rank

from rankrm.label.agreement import same_order, tau_b
from rankrm.label.items import read_lists, read_prompts
from rankrm.label.session import LabelSession
from rankrm.label.store import LabelStore, sidecar


def label_cli(args: list[str], cwd: Path, module: str = "rankrm.label") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "RANKRM_DATA_DIR": str(cwd / "data")}
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["prompts=data/p.txt", "out=labels.jsonl"], "out=labels.jsonl is outside paths.data_dir"),
        (["prompts=data/p.txt", "lists=data/p.txt"], "not both"),
        ([], "give prompts=FILE"),
        (["prompts=data/p.txt", "k=1"], "k must be an integer >= 2"),
        (["lists=data/p.txt", "reader=csv"], "lists=.*p.txt reader=csv: data.source.reader.*csv"),
        (["prompts=data/p.txt", "mode=serve_now"], "mode must be one of serve, summary, generate"),
        (["prompts=data/missing.txt"], "data file not found"),
        (["prompts=data/p.txt", "out=data/p.txt"], "same file"),
        (["prompts=data/p.txt", "server.port=99999"], "server.port must be"),
        (["prompts=data/p.txt", "annotations_per_item=0"], "annotations_per_item must be"),
    ],
)
def test_bad_config_is_refused_before_anything_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], message: str
) -> None:
    from hydra import compose, initialize_config_dir

    from rankrm import CONF_DIR
    from rankrm.errors import RankrmError
    from rankrm.label.__main__ import build

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "p.txt").write_text("hello\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RANKRM_DATA_DIR", "data")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("label", overrides=args)
    with pytest.raises(RankrmError, match=message):
        build(cfg)


def test_a_path_outside_the_data_dir_is_one_line_from_the_cli(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    proc = label_cli(["prompts=/etc/hostname"], tmp_path)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr == (
        f"rankrm: error: prompts=/etc/hostname is outside paths.data_dir ({tmp_path / 'data'}): "
        "move the file there or set RANKRM_DATA_DIR\n"
    )


def test_summary_reports_two_annotators_agreement(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    items = [item(i) for i in range(4)]
    write_jsonl(data / "lists.jsonl", [{"prompt": it.prompt, "responses": list(it.responses)} for it in items])
    items = read_lists(data / "lists.jsonl", "jsonl", Counter())
    store = LabelStore(data / "labels.jsonl")
    ann = [[3, 2, 1, 0], [3, 3, 1, 0], [0, 1, 2, 3], [2, 2, 2, 2]]
    bob = [[3, 2, 0, 1], [3, 3, 1, 0], [3, 2, 1, 0], [1, 0, 0, 1]]  # ann tied all of the last: no tau there
    for it, s in zip(items, ann):
        rank(store, it, "ann", s)
    for it, s in zip(items, bob):
        rank(store, it, "bob", s)
    proc = label_cli(["mode=summary", "lists=data/lists.jsonl"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    taus = [tau_b(a, b) for a, b in zip(ann[:3], bob[:3])]
    exact = sum(same_order(a, b) for a, b in zip(ann, bob))
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("ann / bob")]
    assert row.split() == ["ann", "/", "bob", "4", f"{sum(taus) / 3:.3f}", "3", f"{exact / 4:.3f}"]
    assert any(line.split()[:3] == ["ann", "4/4", "0"] for line in proc.stdout.splitlines())


def test_generate_then_train_on_the_labels(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "prompts.txt").write_text("".join(f"prompt number {i}\n" for i in range(12)))
    gen = ["mode=generate", "prompts=data/prompts.txt", "backbone@generator=tiny_qwen", "k=3"]
    proc = label_cli([*gen, "sampling.max_new_tokens=5", "threads=1"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    answers = [json.loads(x) for x in sidecar(data / "labels.jsonl", "answers").read_text().splitlines()]
    assert len(answers) == 12 and all(len(a["responses"]) == 3 for a in answers)
    # A person ranks every list (here: the answers' stored order, with a tie in every other list).
    session = LabelSession(read_prompts(data / "prompts.txt", Counter()), LabelStore(data / "labels.jsonl"), k=3)
    for i, it in enumerate(session.items):
        session.save(it, [2, 0, 1], [False, i % 2 == 1, False], "ann", 1.0)
    run_dir = tmp_path / "run"
    train = [
        "data=jsonl",
        "data.source.path=data/labels.jsonl",
        "backbone=tiny_bert",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "threads=1",
        "export=false",
        f"hydra.run.dir={run_dir}",
    ]
    proc = label_cli(train, tmp_path, module="rankrm.train")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stats = json.loads((run_dir / "metrics.json").read_text())["data"]
    assert sum(stats[split]["lists_read"] for split in ("train", "val", "test")) == 12
    # 6 strict lists of 3 (3 pairs each) and 6 with a tie at the top (2 pairs each): nothing lost on the way
    assert sum(stats[split]["pairs"] for split in ("train", "val", "test")) == 6 * 3 + 6 * 2
