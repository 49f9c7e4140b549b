"""One local file in one format -> `Items` (lists, split groups, parser counts), no splitting.

`read_file` is what the `file` source runs on each configured file; `read_jsonl` & co. are
the same for the four formats that have a reader name of their own.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from rankrm.data.containers import CONTAINERS, Row, container_of, rename
from rankrm.data.formats import FORMATS, Parsing
from rankrm.data.splits import Items
from rankrm.data.validate import DropLog, check_file
from rankrm.errors import RankrmError


def file_rows(path: str | Path, log: DropLog, parsing: Parsing, container: str | None = None) -> Iterator[Row]:
    """The rows of one local file, in the container its suffix (or `container`) names."""
    p = check_file(path)
    name = container_of(p, container, parsing.format.container)
    got, want = CONTAINERS[name].rows, parsing.format.rows
    if got != want:
        raise RankrmError(
            f"data.source.format={parsing.name} reads {want} rows, but {p} is read as {name} ({got} rows): "
            f"set data.source.container to one of {sorted(c for c, v in CONTAINERS.items() if v.rows == want)}"
        )
    return CONTAINERS[name].read(p, log)


def parse_into(items: Items, rows: Iterator[Row], parsing: Parsing, log: DropLog) -> Items:
    """Stream `rows` through the parser into `items`."""
    for rl, group in parsing.stream(rows, log, items.counts):
        items.add(rl, group)
    return items


def read_file(
    path: str | Path,
    log: DropLog,
    format: str = "list",
    container: str | None = None,
    columns: Mapping[str, str] | None = None,
    **options: Any,
) -> Items:
    """Every list of one local file (`options`: the format's own, e.g. `score_field`)."""
    parsing = Parsing(format, FORMATS[format], options)
    return parse_into(Items(), rename(file_rows(path, log, parsing, container), columns or {}), parsing, log)


read_jsonl = functools.partial(read_file, format="list")
read_trl_pairs = functools.partial(read_file, format="pairs")
read_seed_tsv = functools.partial(read_file, format="seed_tsv")
read_oasst = functools.partial(read_file, format="oasst")
