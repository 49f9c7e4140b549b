"""`--data SPEC`: which lists an evaluation scores, and which held-out lists fit its calibration.

    NAME[@SPLIT]          a data config (`rankrm/conf/data/NAME.yaml`, e.g. `vader`): its SPLIT
                          (default test) as training splits it (same seed), val fits calibration
    KIND:PATH[@SPLIT]     a local file in a format rankrm reads (KIND: a format of
                          `rankrm.data.formats.FORMATS` or its reader name, e.g. `jsonl`, `pairs`,
                          `trl_pairs`, `oasst`): the whole file (SPLIT `all`, the default) or the
                          SPLIT training would carve from it (then val fits calibration)
    rewardbench:PATH      RewardBench v1 rows {prompt, chosen, rejected, subset, id} (json/jsonl/parquet)
    rewardbench2:PATH     RewardBench 2 rows {prompt, chosen: [...], rejected: [...], subset, id}

Lists whose labels all tie are left out (they hold no pair), and counted, as in training.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrm import CONF_DIR
from rankrm.data.formats import FORMATS
from rankrm.data.readers import read_file
from rankrm.data.records import RankedList
from rankrm.data.sources import READERS, read_source
from rankrm.data.validate import DropLog, all_tied
from rankrm.errors import RankrmError
from rankrm.evaluation import rewardbench

SPLIT_NAMES = ("train", "val", "test", "all")
FILE_KINDS = {**{f: f for f in FORMATS}, **READERS}  # kind -> format


@dataclass(frozen=True)
class Spec:
    text: str  # as the user wrote it (the key in results.json)
    kind: str  # "config", a FILE_KINDS key, or a rewardbench kind
    target: str  # config name or file path
    split: str


@dataclass
class EvalSet:
    """The lists of one spec (with per-list `meta`: id, group, subset) and the lists that fit calibration."""

    spec: str
    kind: str  # "lists" | "rewardbench" | "rewardbench2"
    split: str
    lists: list[RankedList]
    meta: list[dict[str, Any]]
    fit: list[RankedList] = field(default_factory=list)
    fit_split: str | None = None
    tied_dropped: int = 0


def data_configs() -> list[str]:
    """Names of the data configs that define a source (base.yaml only holds shared settings)."""
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml") if p.stem != "base")


def parse(text: str) -> Spec:
    """Check a spec's syntax and names (nothing is read)."""
    body, split = text, None
    if "@" in text and text.rsplit("@", 1)[1] in SPLIT_NAMES:
        body, split = text.rsplit("@", 1)
    kind, sep, target = body.partition(":")
    if not sep:
        if kind not in data_configs():
            raise RankrmError(
                f"--data {text!r}: no data config named {kind!r} (configs: {', '.join(data_configs())}); "
                f"a file is KIND:PATH with KIND one of {', '.join([*rewardbench.KINDS, *sorted(FILE_KINDS)])}"
            )
        return Spec(text, "config", kind, split or "test")
    if kind not in (*rewardbench.KINDS, *FILE_KINDS) or not target:
        raise RankrmError(
            f"--data {text!r}: write KIND:PATH with KIND one of {', '.join([*rewardbench.KINDS, *sorted(FILE_KINDS)])}"
        )
    if kind in rewardbench.KINDS and split not in (None, "all"):
        raise RankrmError(f"--data {text!r}: RewardBench files have no splits (drop '@{split}')")
    return Spec(text, kind, target, split or "all")


def config_source(name: str) -> dict[str, Any]:
    """`data.source` of data config `name`, composed as `python -m rankrm.train data=<name>` would."""
    from omegaconf import OmegaConf

    from rankrm.config import load_option

    return OmegaConf.to_container(load_option("data", name).source)  # type: ignore[return-value]


def group_of(rl: RankedList) -> str:
    """The source file (or dataset split) a list came from, without its line: `dir/x.jsonl:7` -> `x`."""
    return Path(rl.source.rsplit(":", 1)[0]).stem or rl.source


def _untied(lists: list[RankedList]) -> tuple[list[RankedList], int]:
    kept = [rl for rl in lists if not all_tied(rl)]
    return kept, len(lists) - len(kept)


def from_source(text: str, source: Mapping[str, Any], split: str, seed: int, skip_invalid: bool = False) -> EvalSet:
    """Split `split` of a `data.source` (read and split exactly as training does); val fits calibration."""
    splits = read_source(source, seed, skip_invalid).splits
    lists, dropped = _untied(list(splits.get(split) or []))
    if not lists:
        raise RankrmError(f"--data {text!r}: the {split} split has no lists with a pair")
    fit = _untied(list(splits.get("val") or []))[0] if split != "val" else []
    meta = [{"id": rl.source, "group": group_of(rl), "subset": None} for rl in lists]
    return EvalSet(text, "lists", split, lists, meta, fit, "val" if fit else None, dropped)


def _rewardbench(spec: Spec) -> EvalSet:
    rows = list(rewardbench.read(spec.kind, spec.target))
    lists = [rl for rl, _ in rows]
    meta = [{**m, "group": m["subset"]} for _, m in rows]
    return EvalSet(spec.text, spec.kind, "all", lists, meta)


def load(spec: Spec, seed: int = 0) -> EvalSet:
    """Read and validate the lists of `spec` (bad input: one RankrmError line)."""
    if spec.kind in rewardbench.KINDS:
        return _rewardbench(spec)
    if spec.kind == "config":
        return from_source(spec.text, config_source(spec.target), spec.split, seed)
    fmt = FILE_KINDS[spec.kind]
    if spec.split != "all":
        return from_source(spec.text, {"reader": "file", "format": fmt, "path": spec.target}, spec.split, seed)
    lists, dropped = _untied(read_file(spec.target, DropLog(), format=fmt).lists)
    if not lists:
        raise RankrmError(f"--data {spec.text!r}: {spec.target} has no list with a pair (all labels tie)")
    meta = [{"id": rl.source, "group": group_of(rl), "subset": None} for rl in lists]
    return EvalSet(spec.text, "lists", "all", lists, meta, tied_dropped=dropped)
