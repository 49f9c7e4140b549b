"""Ranked-list data: one record type, readers for real formats, validation, collation.

`RankedList` is the record every reader produces. The heavier pieces (torch / Lightning) load
on first use: `RankDataModule` (the Hydra `data` target), `RankCollator`, `ListBatchSampler`,
`EncodedList`, `encode_lists`, `load_source`.
"""

from __future__ import annotations

import importlib
from typing import Any

from rankrm.data.records import RankedList

_LAZY = {
    "RankDataModule": "rankrm.data.datamodule",
    "RankCollator": "rankrm.data.collate",
    "ListBatchSampler": "rankrm.data.sampler",
    "EncodedList": "rankrm.data.tokenize",
    "encode_lists": "rankrm.data.tokenize",
    "load_source": "rankrm.data.sources",
}

__all__ = ["RankedList", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rankrm.data' has no attribute {name!r}")
