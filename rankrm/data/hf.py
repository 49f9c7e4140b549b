"""Hugging Face `datasets` as a source: local json/jsonl/csv/parquet files, `save_to_disk`
folders, or hub ids, in one of three row formats.

- `list`: `prompt`?, `responses`, `scores`? (as the list JSONL reader);
- `pairs`: `prompt`?, `chosen`, `rejected` (TRL preference rows, plain or conversational);
- `ultrafeedback`: `instruction` + `completions` [{`response`, `overall_score`, ...}] -> one
  graded list per row, labels = `score_field` of each completion.

`columns` renames dataset columns to these names, e.g. `{prompt: question}`. Offline (or with
the hub unreachable) a hub id stops with a `RankrmError` that says how to get the data instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rankrm.data.readers import Items, list_record, pair_record
from rankrm.data.records import RankedList
from rankrm.data.sources import Splits, assemble
from rankrm.data.validate import (
    DropLog,
    RecordError,
    check_list,
    check_prompt,
    check_score,
    check_text,
    make_list,
    require,
)
from rankrm.errors import RankrmError

FORMATS = ("list", "pairs", "ultrafeedback")
_BUILDERS = {".json": "json", ".jsonl": "json", ".csv": "csv", ".parquet": "parquet"}
_TRUE = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """True if HF_HUB_OFFLINE / HF_DATASETS_OFFLINE is set (read now, not at import time)."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


def _offline_help(path: str) -> str:
    return (
        f"where the hub is reachable run `python -c \"import datasets; datasets.load_dataset('{path}')"
        f".save_to_disk('DIR')\"`, copy DIR here and set data.source.path=DIR "
        "(or point data.source.path / train / val / test at local json, jsonl, csv or parquet files)"
    )


def _load_local(path: Path, split: str | None) -> Any:
    import datasets

    if path.is_dir():
        if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
            raise RankrmError(f"{path} is not a `save_to_disk` folder; point data.source.path at data files instead")
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise RankrmError(f"{path} has splits {sorted(ds)}, not '{split}' (set data.source.splits)")
            ds = ds[split]
        return ds
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise RankrmError(f"{path}: unsupported file type '{path.suffix}' (use one of {sorted(_BUILDERS)})")
    if path.stat().st_size == 0:
        raise RankrmError(f"{path}: file is empty")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as e:  # noqa: BLE001 -- an arrow/json parse failure is a data problem, not a crash
        raise RankrmError(f"{path}: datasets could not read it as {builder}: {type(e).__name__}: {e}") from None


def _load_hub(path: str, name: str | None, split: str, revision: str | None) -> Any:
    if hub_offline():
        raise RankrmError(f"data.source.path='{path}' is a hub id but HF_HUB_OFFLINE is set; {_offline_help(path)}")
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 -- no network, no such dataset, no auth: all user-fixable
        raise RankrmError(
            f"could not load '{path}' (split {split}) from the hub: {type(e).__name__}: "
            f"{str(e)[:200]}; {_offline_help(path)}"
        ) from None


def load_rows(path: str, split: str | None, name: str | None = None, revision: str | None = None) -> Any:
    """A `datasets.Dataset` from a local file / folder (missing files are named) or a hub id."""
    p = Path(path).expanduser()
    if p.exists():
        return _load_local(p, split)
    if p.suffix.lower() in _BUILDERS or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise RankrmError(f"data file not found: {p}")
    return _load_hub(path, name, split or "train", revision)


def _rename(row: Mapping[str, Any], columns: Mapping[str, str]) -> dict[str, Any]:
    out = dict(row)
    for ours, theirs in columns.items():
        if theirs in row:
            out[ours] = row[theirs]
    return out


def ultrafeedback_record(row: dict[str, Any], where: Path, line: int, score_field: str) -> RankedList:
    """An UltraFeedback row: `instruction` + `completions` (list of dicts, or dict of lists)."""
    comps = require(row, "completions", where, line)
    if isinstance(comps, dict):  # a `Sequence` of structs comes back column-wise
        keys = list(comps)
        comps = [dict(zip(keys, vals)) for vals in zip(*(comps[k] for k in keys))]
    comps = check_list(comps, where, line, "completions")
    texts, labels = [], []
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise RecordError("wrong_type", where, line, f"completions[{i}]", "must be an object")
        texts.append(check_text(c.get("response"), where, line, f"completions[{i}].response"))
        labels.append(check_score(c.get(score_field), where, line, f"completions[{i}].{score_field}"))
    prompt = check_prompt(row.get("prompt", row.get("instruction")), where, line, "instruction")
    return make_list(texts, labels, prompt, where, line, "completions")


def rows_to_items(
    rows: Iterable[Mapping[str, Any]], where: str, fmt: str, log: DropLog, columns: Mapping[str, str], score_field: str
) -> Items:
    """Validate each row (row i is reported as line i+1 of `where`) and collect the lists."""
    items = Items()
    src = Path(where)
    for i, row in enumerate(rows):
        r = _rename(row, columns)
        try:
            if fmt == "list":
                items.add(list_record(r, src, i + 1))
            elif fmt == "pairs":
                items.add(pair_record(r, src, i + 1))
            else:
                items.add(ultrafeedback_record(r, src, i + 1, score_field))
        except RecordError as e:
            log.report(e)
    return items


def load_hf(
    log: DropLog,
    seed: int,
    path: str | None = None,
    format: str = "list",
    name: str | None = None,
    revision: str | None = None,
    splits: Mapping[str, str | None] | None = None,
    train: str | None = None,
    val: str | None = None,
    test: str | None = None,
    columns: Mapping[str, str] | None = None,
    score_field: str = "overall_score",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
) -> tuple[Splits, dict]:
    """Rows of `path` (its `splits` names; a null split is carved from train) or of per-split files."""
    if format not in FORMATS:
        raise RankrmError(f"data.source.format must be one of {FORMATS}, got {format!r}")
    if bool(path) == bool(train):
        raise RankrmError("data.source: give either `path` (a dataset) or `train` (+ `val`/`test` files)")
    names = dict(splits or {"train": "train", "val": None, "test": None})
    per_split: dict[str, Items | None] = {}
    for s in ("train", "val", "test"):
        src, split = (path, names.get(s)) if path else ({"train": train, "val": val, "test": test}[s], None)
        if src is None or (path and split is None):
            per_split[s] = None
            continue
        rows = load_rows(src, split, name, revision)
        where = src if (split is None or Path(src).expanduser().is_file()) else f"{src}[{split}]"
        per_split[s] = rows_to_items(rows, where, format, log, dict(columns or {}), score_field)
    return assemble(per_split, fractions, seed)
