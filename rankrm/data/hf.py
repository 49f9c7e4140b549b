"""Hugging Face `datasets` as rows: a local `save_to_disk` folder or a hub id, one split at a time.

Rows are read lazily from the dataset's memory-mapped Arrow files; row i is reported as
line i+1 of `<path>[<split>]`. Offline (or with the hub unreachable) a hub id stops with a
`RankrmError` that says how to get the data instead. Which format the rows are in is the
business of `rankrm.data.formats`; local data files are read by `rankrm.data.containers`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rankrm.data.containers import SUFFIXES, Row
from rankrm.errors import RankrmError
from rankrm.hub import hub_offline


def _offline_help(path: str) -> str:
    return (
        f"where the hub is reachable run `python -c \"import datasets; datasets.load_dataset('{path}')"
        f".save_to_disk('DIR')\"`, copy DIR here and set data.source.path=DIR "
        f"(or point data.source.path / train / val / test at local {', '.join(sorted(SUFFIXES))} files)"
    )


def _load_disk(path: Path, split: str | None) -> Any:
    import datasets

    if not ((path / "dataset_dict.json").exists() or (path / "state.json").exists()):
        raise RankrmError(f"{path} is not a `save_to_disk` folder; point data.source.path at data files instead")
    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            raise RankrmError(f"{path} has splits {sorted(ds)}, not '{split}' (set data.source.splits)")
        ds = ds[split]
    return ds


def _load_hub(path: str, name: str | None, split: str | None, revision: str | None) -> Any:
    if hub_offline(datasets=True):
        raise RankrmError(f"data.source.path='{path}' is a hub id but HF_HUB_OFFLINE is set; {_offline_help(path)}")
    import datasets

    try:
        return datasets.load_dataset(path, name, split=split, revision=revision)
    except Exception as e:  # noqa: BLE001 -- no network, no such dataset, no auth: all user-fixable
        raise RankrmError(
            f"could not load '{path}' (split {split}) from the hub: {type(e).__name__}: "
            f"{str(e)[:200]}; {_offline_help(path)}"
        ) from None


def fingerprint(path: str, name: str | None = None, revision: str | None = None) -> str:
    """What identifies a hub dataset's content (for the token cache key): the `datasets` fingerprint
    of each of its splits, as loaded (from the local HF cache, or the hub)."""
    ds = _load_hub(path, name, None, revision)  # split None: every split, a DatasetDict
    return json.dumps({split: d._fingerprint for split, d in sorted(ds.items())})


def looks_local(path: str) -> bool:
    """A path meant as a local file or folder (a data-file suffix, ./ / ~ prefix, 2+ slashes), not a hub id."""
    return Path(path).suffix.lower() in SUFFIXES or path.startswith((".", "/", "~")) or path.count("/") > 1


def dataset_rows(path: str, split: str | None, name: str | None = None, revision: str | None = None) -> Iterator[Row]:
    """Rows of a `save_to_disk` folder or a hub dataset (split None: "train"); a missing local path is named."""
    p = Path(path).expanduser()
    if p.is_dir():
        ds = _load_disk(p, split)
    elif looks_local(path):
        raise RankrmError(f"data file not found: {p}")
    else:
        ds = _load_hub(path, name, split or "train", revision)
    where = path if split is None else f"{path}[{split}]"
    return ((where, i + 1, row) for i, row in enumerate(ds))
