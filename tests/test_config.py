"""The config schema (rankrm.config): one bad value per field of every group fails with one line naming
the key, the value and what is allowed; the cross-field rules; the literal lists against Lightning's own.
(One CLI case per group: tests/test_reliability_input.py; every shipped yaml validates: tests/test_train.py.)"""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from typing import Any, get_args, get_origin, get_type_hints

import pytest
from hydra import compose, initialize_config_dir

from rankrm import CONF_DIR
from rankrm.config import validate
from rankrm.config.cli import check_command_line
from rankrm.config.loop import Accelerator, Precision, Strategy
from rankrm.config.schema import BASES, Loss
from rankrm.config.types import TARGETS, Range, describe, fits, show
from rankrm.errors import RankrmError

# Where each schema's fields live in a composed train config (the options that hold the targets).
PLACES: list[tuple[str, list[str], type]] = [
    ("", [], BASES[None]),
    ("paths", [], get_type_hints(BASES[None])["paths"]),
    ("data", [], BASES["data"]),
    ("backbone", [], BASES["backbone"]),
    ("backbone.lora", [], get_type_hints(BASES["backbone"])["lora"]),
    ("loss", [], Loss),
    ("optimizer", [], TARGETS["torch.optim.AdamW"]),
    ("scheduler", [], BASES["scheduler"]),
    ("trainer", [], BASES["trainer"]),
    ("callbacks.model_checkpoint", [], TARGETS["lightning.pytorch.callbacks.ModelCheckpoint"]),
    ("callbacks.progress_bar", [], TARGETS["lightning.pytorch.callbacks.RichProgressBar"]),
    ("callbacks.early_stopping", ["callbacks=early_stopping"], TARGETS["lightning.pytorch.callbacks.EarlyStopping"]),
    ("logger.csv", [], TARGETS["lightning.pytorch.loggers.CSVLogger"]),
    ("logger.tensorboard", ["logger=tensorboard"], TARGETS["lightning.pytorch.loggers.TensorBoardLogger"]),
]
CANDIDATES: list[Any] = ["zz_not_allowed", -7, 0.5, True, [1], {"a": 1}]


def bad_value(tp: Any) -> Any:
    """A value the type refuses: out of its range where it has one, else of another type."""
    preferred: list[Any] = []
    if get_origin(tp) is list:
        preferred.append([0])  # metric_cutoffs: integers >= 1
    if get_origin(tp) is tuple:
        preferred.append([1.5] * len(get_args(tp)))  # betas: numbers in [0, 1)
    for arg in (tp, *get_args(tp)):  # the type, or each member of a union
        for rng in (m for m in getattr(arg, "__metadata__", ()) if isinstance(m, Range)):
            preferred += [rng.lo - 1 if rng.lo is not None else None, rng.hi + 1 if rng.hi is not None else None]
    for v in [*preferred, *CANDIDATES]:
        if v is not None and not fits(v, tp):
            return v
    raise AssertionError(f"no bad value for {tp}")


def hydra_value(v: Any) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, list):
        return "[" + ",".join(map(hydra_value, v)) + "]"
    if isinstance(v, dict):
        return "{" + ",".join(f"{k}:{hydra_value(x)}" for k, x in v.items()) + "}"
    return str(v)


def composed(*overrides: str) -> Any:
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", overrides=list(overrides))


FIELDS = [
    (place, options, f.name, get_type_hints(schema, include_extras=True)[f.name])
    for place, options, schema in PLACES
    for f in dataclasses.fields(schema)
]


@pytest.mark.parametrize("place, options, name, tp", FIELDS, ids=[f"{p or 'root'}.{n}" for p, _, n, _ in FIELDS])
def test_one_bad_value_per_field_is_one_clear_line(place: str, options: list[str], name: str, tp: Any) -> None:
    key = f"{place}.{name}" if place else name
    value = bad_value(tp)
    cfg = composed(*options, f"++{key}={hydra_value(value)}")
    with pytest.raises(RankrmError) as err:
        validate(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    if name == "_target_":  # a `_target_` group names what its target must be in its own words
        assert msg.startswith(f"{key} must be ") and msg.endswith(f", got {show(value)}"), msg
    else:
        assert msg.startswith(f"{key} must be {describe(tp)}, got {show(value)}"), msg


TYPOS = {
    "": "seeed",
    "paths": "data_dri",
    "data": "batch_sise",
    "backbone": "poolling",
    "backbone.lora": "alpah",
    "loss": "kwarg",
    "optimizer": "weight_decai",
    "scheduler": "decy",
    "trainer": "max_epoch",
    "callbacks.model_checkpoint": "monitr",
    "logger.csv": "save_dri",
}


@pytest.mark.parametrize("place, typo", TYPOS.items())
def test_an_unknown_key_in_every_group_is_named_with_a_suggestion(place: str, typo: str) -> None:
    """A typo'd key fails in every group: not in the schema, or not a parameter of the group's `_target_`."""
    key = f"{place}.{typo}" if place else typo
    with pytest.raises(RankrmError, match=rf"^unknown key {re.escape(key)}=1\b.*did you mean"):
        validate(composed(f"+{key}=1"))


@pytest.mark.parametrize(
    "overrides, words",
    [
        (
            ["backbone.padding_side=left"],
            "backbone.pooling=pooler reads token 0, so it needs backbone.padding_side=right",
        ),
        (["backbone=tiny_qwen", "backbone.padding_side=left"], None),  # last_token: left padding is fine
        (["backbone.gradient_checkpointing=true", "backbone.freeze=head_only"], "gradient_checkpointing.*head_only"),
        (["backbone=tiny_bert", "~backbone.tiny.model_type"], "backbone.tiny needs a model_type"),
        (["data.max_tokens=512", "data.length_grouping=false"], "data.max_tokens needs data.length_grouping=true"),
        (["data.max_tokens=512"], None),
        (["trainer=fsdp", "trainer.accelerator=cpu", "export=false"], "trainer.strategy=fsdp runs on GPUs only"),
        (["trainer=fsdp"], "export=true is not supported with trainer.strategy=fsdp"),
        (["trainer=fsdp", "export=false"], None),
        (["~loss.name"], "loss.name is missing"),
        (["loss=listnet", "loss.kwargs=5"], "loss.kwargs must be a mapping, got 5"),
    ],
)
def test_cross_field_rules(overrides: list[str], words: str | None) -> None:
    cfg = composed(*overrides)
    if words is None:
        validate(cfg)
        return
    with pytest.raises(RankrmError, match=words):
        validate(cfg)


def test_an_unknown_target_is_checked_against_its_parameters() -> None:
    """A callback rankrm has no schema for (the sweep's pruning callback, a user's own) is checked by its
    signature: a key it takes passes, a typo fails, a target that cannot be imported fails."""
    ok = "+callbacks.extra._target_=lightning.pytorch.callbacks.LearningRateMonitor"
    validate(composed(ok, "+callbacks.extra.logging_interval=step"))
    with pytest.raises(RankrmError, match=r"LearningRateMonitor takes no 'loging_interval' \(did you mean"):
        validate(composed(ok, "+callbacks.extra.loging_interval=step"))
    with pytest.raises(RankrmError, match=r"callbacks.extra._target_='no_such.Thing' cannot be imported"):
        validate(composed("+callbacks.extra._target_=no_such.Thing", "+callbacks.extra.x=1"))


def test_the_literal_lists_are_lightnings() -> None:
    """The trainer's strategy, accelerator and precision choices are the installed Lightning's."""
    from lightning.fabric.connector import _PRECISION_INPUT
    from lightning.pytorch.accelerators import AcceleratorRegistry
    from lightning.pytorch.strategies import StrategyRegistry

    assert set(get_args(Strategy)) == {"auto", *StrategyRegistry.available_strategies()}
    assert set(get_args(Accelerator)) == {"auto", "gpu", *AcceleratorRegistry.available_accelerators()}
    assert set(get_args(Precision)) == {v for lit in get_args(_PRECISION_INPUT) for v in get_args(lit)}


def test_the_defaults_are_registered_as_each_groups_base() -> None:
    """Each base in the composed config is the schema's defaults, so the schema is the one home of them."""
    cfg = composed("backbone=bert")  # bert.yaml sets only name_or_path
    defaults = dataclasses.asdict(BASES["backbone"]())
    assert {k: v for k, v in cfg.backbone.items() if k != "name_or_path"} == {
        k: v for k, v in defaults.items() if k != "name_or_path"
    }
    assert cfg.seed == BASES[None].seed and cfg.trainer.max_epochs == BASES["trainer"].max_epochs


def test_any_compose_finds_the_bases_through_hydras_plugin_scan(tmp_path: Any) -> None:
    """A process that composes rankrm/conf without importing rankrm.config (a script, a notebook) still
    gets the schema's defaults: Hydra imports hydra_plugins/rankrm_config when it starts."""
    code = (
        "import sys; from hydra import compose, initialize_config_dir; from rankrm import CONF_DIR\n"
        "with initialize_config_dir(config_dir=str(CONF_DIR), version_base='1.3'):\n"
        "    cfg = compose('train', overrides=['backbone=qwen'])\n"
        "assert 'rankrm.config' in sys.modules\n"
        "print(cfg.backbone.freeze, cfg.data.batch_size)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert out.returncode == 0 and out.stdout.split() == ["full", "8"], out.stderr[-2000:]


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["backbone.poolling=cls"],
            "unknown key backbone.poolling=cls (did you mean backbone.pooling?); backbone has:",
        ),
        (["seeed=1"], "unknown key seeed=1 (did you mean seed?); train.yaml has: seed, threads"),
        (
            ["backbone=xyz"],
            "backbone=xyz is not an option of backbone; choose one of: bert, e5_multilingual, ernie, minilm",
        ),
        (["experiment=pooling_oasts"], "experiment=pooling_oasts is not an option of experiment (did you mean"),
        (["data.batch_size=["], "no viable alternative at input '['"),
    ],
)
def test_composition_errors_are_one_line(argv: list[str], words: str) -> None:
    with pytest.raises(RankrmError) as err:
        check_command_line("train", argv)
    assert str(err.value).startswith(words) and "\n" not in str(err.value), err.value


def test_hydra_flags_and_the_ddp_children_command_line_pass() -> None:
    check_command_line("train", ["--cfg", "job", "backbone=xyz"])  # left to Hydra, which reports it
    check_command_line("train", ["hydra.run.dir=/tmp/x", "hydra.output_subdir=.pl", "hydra.job.name=train_ddp_1"])
    check_command_line("train", ["-cn", "train", "backbone=tiny_bert"])
