"""Issue #8, bad input: every malformed file or config value ends the real CLI with one clear
message (file, line and field; or config key and its choices), exit code != 0 and no traceback;
`data.skip_invalid=true` turns record errors into counted drops reported in metrics.json."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_fixtures import strict_rows, write_jsonl

BASE = [
    "backbone=tiny_bert",
    "data=jsonl",
    "data.batch_size=4",
    "trainer.max_epochs=1",
    "threads=1",
    "callbacks.progress_bar=null",
    "++trainer.enable_progress_bar=false",
    "export=false",
    "test=false",
]
GOOD = [json.dumps(r) for r in strict_rows(2)]  # lines 1-2; the bad record is always line 3


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # what a user sees by default
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run(
        [sys.executable, "-m", "rankrm.train", *args, f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode != 0, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, proc.stderr[-3000:]
    assert proc.stderr.count("rankrm: error:") == 1, proc.stderr[-3000:]
    line = next(x for x in proc.stderr.splitlines() if x.startswith("rankrm: error:"))
    for w in words:
        assert w in line, f"{w!r} not in {line!r}"


def test_malformed_record_names_file_line_field(tmp_path: Path) -> None:
    """A reader's DataError ends the CLI with its one line. Each kind of malformed record, with the field
    and words its message names, is checked once, against the reader: tests/test_data_validation.py."""
    bad = {"responses": ["a", "b", "c"], "scores": [1, 2]}
    path = write_jsonl(tmp_path / "lists.jsonl", [*GOOD, bad, *GOOD])
    assert_one_clear_error(
        run_cli(tmp_path, *BASE, f"data.source.path={path}"), f"{path}:3:", "field 'scores'", "2 values for 3"
    )


def test_undecodable_bytes_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "lists.jsonl"
    path.write_bytes(("\n".join(GOOD) + "\n").encode() + b'{"responses": ["caf\xe9", "b"]}\n')
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}"), f"{path}:3:", "not valid UTF-8")


@pytest.mark.parametrize(
    "content, words", [("", ["file is empty"]), ("\n  \n", ["file is empty"])], ids=["empty", "blank_lines"]
)
def test_empty_file(tmp_path: Path, content: str, words: list[str]) -> None:
    path = tmp_path / "lists.jsonl"
    path.write_text(content)
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}"), str(path), *words)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.jsonl"
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}"), "data file not found", str(path))


def test_other_readers_name_file_line_field(tmp_path: Path) -> None:
    tsv = tmp_path / "lists.tsv"
    tsv.write_text("best\tworse\tworst\nfine\t \tbad\n")
    assert_one_clear_error(
        run_cli(tmp_path, *BASE, "data=seed_tsv", f"data.source.path={tsv}"), f"{tsv}:2:", "field 'column 2'", "empty"
    )
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [{"chosen": "a", "rejected": "b"}, {"chosen": "x", "rejected": "x"}])
    assert_one_clear_error(
        run_cli(tmp_path, *BASE, "data=trl_pairs", f"data.source.path={pairs}"),
        f"{pairs}:2:",
        "field 'rejected'",
        "identical",
    )


# (id, overrides, words of the one error line): config values checked before any model loads or data is
# tokenised, at least one per config group (every field of every group: tests/test_config.py).
CONFIG_CASES = [
    ("root_seed", ["seed=-1"], ["seed must be an integer >= 0, got -1"]),
    ("root_metric_cutoffs", ["metric_cutoffs=[0,3]"], ["metric_cutoffs must be a list of integers >= 1, got [0, 3]"]),
    ("resume_without_checkpoint", ["resume=true"], ["resume=true", "last.ckpt", "does not exist"]),
    ("paths_data_dir", ["paths.data_dir=[a]"], ["paths.data_dir must be a string, got ['a']"]),
    ("max_epochs_abc", ["trainer.max_epochs=abc"], ["trainer.max_epochs must be null or an integer >= -1, got 'abc'"]),
    ("clip_text", ["trainer.gradient_clip_val=yes"], ["trainer.gradient_clip_val must be null or a number >= 0"]),
    ("precision", ["trainer.precision=65-true"], ["trainer.precision must be one of", "got '65-true'"]),
    ("trainer_unknown_arg", ["+trainer.max_epoch=2"], ["trainer.max_epoch=2", "Trainer takes no", "max_epochs?"]),
    ("batch_size_neg", ["data.batch_size=-1"], ["data.batch_size must be an integer >= 1, got -1"]),
    ("batch_size_float", ["data.batch_size=2.5"], ["data.batch_size must be an integer >= 1, got 2.5"]),
    ("max_length_zero", ["data.max_length=0"], ["data.max_length must be null or an integer >= 1, got 0"]),
    ("skip_invalid_text", ["data.skip_invalid=maybe"], ["data.skip_invalid must be true or false, got 'maybe'"]),
    ("overlong_typo", ["data.overlong=trunc"], ["data.overlong must be one of filter, truncate, got 'trunc'"]),
    ("max_tokens_ungrouped", ["data.max_tokens=64", "data.length_grouping=false"], ["needs data.length_grouping"]),
    ("unknown_reader", ["data.source.reader=csv"], ["data.source.reader", "jsonl", "vader"]),
    ("no_data_path", ["data.source.path=null"], ["give either `path`", "`train`"]),
    ("unknown_source_option", ["+data.source.pth=x.jsonl"], ["unknown option", "pth", "path"]),
    ("pooling_typo", ["backbone.pooling=last_tokn"], ["backbone.pooling must be one of", "(did you mean last_token?)"]),
    ("unknown_backbone_key", ["backbone.poolling=cls"], ["unknown key backbone.poolling=cls", "backbone.pooling?"]),
    ("left_padding_pooler", ["backbone.padding_side=left"], ["backbone.pooling=pooler", "padding_side=right"]),
    ("lr_text", ["optimizer.lr=fast"], ["optimizer.lr must be a number >= 0, got 'fast'"]),
    ("weight_decay_neg", ["optimizer.weight_decay=-1.0"], ["optimizer.weight_decay must be a number >= 0, got -1.0"]),
    ("betas_out_of_range", ["optimizer.betas=[1.5,0.9]"], ["optimizer.betas must be a list of 2 numbers in [0, 1)"]),
    ("unknown_optimizer_arg", ["+optimizer.momentum=0.9"], ["optimizer.momentum=0.9", "AdamW takes no 'momentum'"]),
    ("warmup_ratio", ["scheduler.warmup_ratio=2"], ["scheduler.warmup_ratio must be a number in [0, 1], got 2"]),
    ("unknown_decay", ["scheduler.decay=exp"], ["scheduler.decay must be one of linear, cosine, constant, got 'exp'"]),
    ("unknown_loss_name", ["loss.name=xyz"], ["loss.name must be one of", "listmle", "ranklist", "got 'xyz'"]),
    ("unknown_loss_kwarg", ["+loss.kwargs.temprature=2"], ["loss.kwargs", "temprature"]),
    ("bad_loss_value", ["loss=listnet", "loss.kwargs.temperature=-1"], ["temperature must be > 0"]),
    ("callback_mode", ["callbacks.model_checkpoint.mode=maxx"], ["model_checkpoint.mode must be one of min, max"]),
    ("logger_version", ["logger.csv.version=-3"], ["logger.csv.version must be", "got -3"]),
    (
        "unknown_experiment",
        ["experiment=pooling_oasts"],
        ["experiment=pooling_oasts is not an option", "pooling_oasst"],
    ),
]


@pytest.mark.parametrize("overrides, words", [c[1:] for c in CONFIG_CASES], ids=[c[0] for c in CONFIG_CASES])
def test_bad_config_value_names_key(tmp_path: Path, overrides: list[str], words: list[str]) -> None:
    path = write_jsonl(tmp_path / "lists.jsonl", strict_rows(12))
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}", *overrides), *words)


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["trainer=fsdp", "trainer.accelerator=cpu"], ["trainer.strategy=fsdp", "GPUs only", "trainer=ddp"]),
        (["trainer=fsdp", "export=true"], ["export=true", "trainer.strategy=fsdp", "set export=false"]),
        pytest.param(
            ["trainer=gpu"],
            ["trainer.accelerator=gpu", "no CUDA GPU", "trainer=cpu"],
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
        ),
    ],
    ids=["fsdp_on_cpu", "fsdp_export", "gpu_without_cuda"],
)
def test_trainer_needs_the_hardware_it_names(tmp_path: Path, overrides: list[str], words: list[str]) -> None:
    """GPU trainer configs fail before any model loads, saying what to set, instead of inside Lightning
    (or, for an FSDP export, hanging in a collective only rank 0 entered)."""
    path = write_jsonl(tmp_path / "lists.jsonl", strict_rows(12))
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}", *overrides), *words)


@pytest.mark.parametrize(
    "group, choices",
    [
        ("loss", ["listmle", "pairwise", "ranklist"]),
        ("backbone", ["minilm", "tiny_bert", "qwen"]),
        ("data", ["jsonl", "vader", "oasst"]),
    ],
)
def test_unknown_group_option_lists_choices(tmp_path: Path, group: str, choices: list[str]) -> None:
    proc = run_cli(tmp_path, f"{group}=xyz")
    assert_one_clear_error(proc, f"{group}=xyz is not an option of {group}; choose one of: ", *choices)
    assert "base" not in proc.stderr.split("choose one of: ")[1].split(", ")  # the schema's defaults, not a choice


@pytest.mark.slow
@pytest.mark.parametrize(
    "rows, overrides, words",
    [
        ([{"responses": ["a", "b", "c"], "scores": [1, 1, 1]}] * 6, [], ["tied", "tied_dropped"]),
        (strict_rows(6), ["data.max_length=4"], ["data.max_length", "overlong_filtered"]),
    ],
    ids=["all_tied", "all_overlong"],
)
def test_nothing_left_after_filtering_names_the_file(tmp_path: Path, rows, overrides, words) -> None:
    """Tied or over-long lists are dropped and counted; when none is left the run stops, naming the file."""
    path = write_jsonl(tmp_path / "lists.jsonl", rows)
    assert_one_clear_error(run_cli(tmp_path, *BASE, f"data.source.path={path}", *overrides), str(path), *words)


@pytest.mark.slow
def test_skip_invalid_drops_and_counts(tmp_path: Path) -> None:
    bad = [
        '{"responses": ["a", "b"',
        {"responses": ["only"]},
        {"responses": ["x", ""]},
        '{"responses": ["a", "b"], "scores": [NaN, 1]}',
        {"responses": ["s", "t", "s"]},
        {"responses": ["a", "b"], "scores": [1, 1]},
    ]  # the last is valid but tied: dropped later, counted
    rows = strict_rows(24)
    path = write_jsonl(tmp_path / "lists.jsonl", rows[:12] + bad + rows[12:])
    proc = run_cli(tmp_path, *BASE, f"data.source.path={path}", "data.skip_invalid=true")
    assert proc.returncode == 0, proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert "skipped invalid records" in log and f"{path}:13:" in log
    stats = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]
    assert stats["dropped_invalid"] == {
        "bad_score": 1,
        "duplicate_text": 1,
        "empty_response": 1,
        "invalid_json": 1,
        "k<2": 1,
    }
    assert sum(stats[s]["tied_dropped"] for s in ("train", "val", "test")) == 1
    assert sum(stats[s]["lists"] for s in ("train", "val", "test")) == 24
