"""Local file containers: each one streams a file as rows `(where, line, value)`, one at a time.

`value` is a mapping ("object" rows: JSON lines, a JSON array, CSV with a header, parquet) or
a list of strings ("columns": TAB-separated lines). `line` is the 1-based line of the row
(for parquet, its row number), so a parser's error names file:line:field. A row the container
cannot decode (bad UTF-8, bad JSON, not an object) goes to the `DropLog` (raised, or counted
with `skip_invalid`) and reading goes on. Memory: one row at a time (a JSON array: the file).

Add a container: a generator `(path, log) -> rows` and its entry in `CONTAINERS` (+ `SUFFIXES`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.data.validate import DropLog, RecordError, check_file, iter_lines, parse_json_object
from rankrm.errors import DataError, RankrmError

Row = tuple[str, int, Any]  # (file or dataset[split], 1-based line / row number, mapping or list of columns)


def _lines(path: Path, log: DropLog) -> Iterator[tuple[int, str]]:
    """Non-blank decoded lines; a file with none (and no reported error) holds no records."""
    empty = True
    for lineno, text in iter_lines(path, log):
        empty = False
        yield lineno, text
    if empty and not log.counts:
        raise DataError(str(path), None, None, "contains no records")


def read_jsonl(path: Path, log: DropLog) -> Iterator[Row]:
    """One JSON object per line."""
    for lineno, text in _lines(path, log):
        try:
            obj = parse_json_object(text, path, lineno)
        except RecordError as e:
            log.report(e)
            continue
        yield str(path), lineno, obj


def unquote_csv(text: str) -> str:
    """Strip CSV-style quoting: `"a ""b"" c"` -> `a "b" c` (texts copied verbatim from a CSV)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def read_tsv(path: Path, log: DropLog) -> Iterator[Row]:
    """TAB-separated columns, no header; CSV-style "quoted" cells are unquoted."""
    for lineno, text in _lines(path, log):
        yield str(path), lineno, [unquote_csv(c) for c in text.split("\t")]


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _decode(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(str(path), None, None, f"is not valid UTF-8 (byte {e.start})") from None


def read_json(path: Path, log: DropLog) -> Iterator[Row]:
    """A JSON array of objects (read whole; each object named by the line it starts on), or JSON lines."""
    text = _decode(path)
    pos = _skip_space(text, 0)
    if not text.startswith("[", pos):
        yield from read_jsonl(path, log)
        return
    decoder, n, line, seen = json.JSONDecoder(), 0, 1, 0  # `line` is the line of text[seen]
    pos += 1
    while not text.startswith("]", pos := _skip_space(text, pos)):
        if n:  # between two objects: one comma
            if not text.startswith(",", pos):
                raise DataError(str(path), line + text.count("\n", seen, pos), None, "expected ',' or ']'")
            pos = _skip_space(text, pos + 1)
        line, seen = line + text.count("\n", seen, pos), pos
        try:
            obj, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:  # the rest of the array cannot be found again: not skippable
            raise DataError(str(path), e.lineno, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
        n += 1
        if isinstance(obj, dict):
            yield str(path), line, obj
        else:
            log.report(RecordError("wrong_type", path, line, None, f"expected a JSON object, got {type(obj).__name__}"))
    if n == 0:
        raise DataError(str(path), None, None, "contains no records")


def read_csv(path: Path, log: DropLog) -> Iterator[Row]:
    """Comma-separated values with a header row; every cell is a string (blank rows are skipped)."""
    with path.open(encoding="utf-8-sig", newline="") as fh:
        rows = csv.reader(fh)
        try:
            yield from _csv_rows(path, rows, log)
        except UnicodeDecodeError:
            raise DataError(str(path), rows.line_num + 1, None, "is not valid UTF-8") from None


def _csv_rows(path: Path, rows: Any, log: DropLog) -> Iterator[Row]:
    header = next(rows, None)
    if not header:
        raise DataError(str(path), None, None, "contains no header row")
    n, start = 0, rows.line_num + 1
    for cells in rows:
        lineno, start = start, rows.line_num + 1  # a quoted cell may span lines: name the first
        if not any(c.strip() for c in cells):
            continue
        n += 1
        if len(cells) != len(header):
            log.report(RecordError("wrong_type", path, lineno, None, f"has {len(cells)} cells, header {len(header)}"))
            continue
        yield str(path), lineno, dict(zip(header, cells))
    if n == 0:
        raise DataError(str(path), None, None, "contains no records")


def read_parquet(path: Path, log: DropLog) -> Iterator[Row]:
    """Parquet rows, read in batches of 1,024 (pyarrow); a row is named by its 1-based number."""
    try:
        import pyarrow.parquet as pq

        batches = pq.ParquetFile(path).iter_batches(batch_size=1024)
        n = 0
        for batch in batches:
            for row in batch.to_pylist():
                n += 1
                yield str(path), n, row
    except ImportError:
        raise RankrmError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from None
    except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
        raise RankrmError(f"{path}: not a readable parquet file ({type(e).__name__}: {e})") from None
    if n == 0:
        raise DataError(str(path), None, None, "contains no records")


@dataclass(frozen=True)
class Container:
    read: Callable[[Path, DropLog], Iterator[Row]]
    rows: str  # "object" (mappings) or "columns" (lists of strings)


CONTAINERS: dict[str, Container] = {
    "jsonl": Container(read_jsonl, "object"),
    "json": Container(read_json, "object"),
    "csv": Container(read_csv, "object"),
    "parquet": Container(read_parquet, "object"),
    "tsv": Container(read_tsv, "columns"),
}
SUFFIXES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".tsv": "tsv"}


def container_of(path: str | Path, container: str | None, fallback: str) -> str:
    """The configured container, else the one the suffix names, else `fallback` (the format's own)."""
    if container is None:
        return SUFFIXES.get(Path(path).suffix.lower(), fallback)
    if container not in CONTAINERS:
        raise RankrmError(f"data.source.container={container!r} must be one of {sorted(CONTAINERS)} (or null)")
    return container


def read_rows(path: str | Path, log: DropLog, container: str | None = None, fallback: str = "jsonl") -> Iterator[Row]:
    """Rows of one local file (missing or empty files are a `RankrmError` naming them)."""
    p = check_file(path)
    return CONTAINERS[container_of(p, container, fallback)].read(p, log)


def rename(rows: Iterable[Row], columns: Mapping[str, str]) -> Iterator[Row]:
    """Object rows with `columns` ({our name: their column}) copied to our names, e.g. {prompt: question}."""
    for where, line, row in rows:
        if columns and isinstance(row, dict):
            row = {**row, **{ours: row[theirs] for ours, theirs in columns.items() if theirs in row}}
        yield where, line, row
