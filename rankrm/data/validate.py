"""Validation of raw records: every malformed record becomes a `DataError(path, line, field, msg)`.

Readers call the `check_*` helpers and raise `RecordError` (a `DataError` that also carries a
short machine reason such as "k<2"). `DropLog` decides what happens next: with
`skip_invalid=False` the error propagates (one line for the user, no traceback); with
`skip_invalid=True` the record is dropped and counted under its reason, so the run can report
"dropped 3 records: empty_response 2, bad_score 1" instead of losing data silently.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rankrm.data.records import Message, Prompt, RankedList
from rankrm.errors import DataError, RankrmError


class RecordError(DataError):
    """A `DataError` for one record, tagged with a short reason used as the drop-count key."""

    def __init__(self, reason: str, path: str | Path, line: int | None, field: str | None, msg: str) -> None:
        super().__init__(str(path), line, field, msg)
        self.reason = reason


class DropLog:
    """Collects invalid records: raises them (default) or counts them per reason (`skip_invalid`)."""

    def __init__(self, skip_invalid: bool = False, n_examples: int = 3) -> None:
        self.skip_invalid = skip_invalid
        self.counts: Counter[str] = Counter()
        self.examples: list[str] = []  # the first few messages, for the log summary
        self._n_examples = n_examples

    def report(self, err: RecordError) -> None:
        """Raise `err`, or (when skipping) count it under `err.reason` and keep going."""
        if not self.skip_invalid:
            raise err
        self.counts[err.reason] += 1
        if len(self.examples) < self._n_examples:
            self.examples.append(str(err))

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))


def check_file(path: str | Path) -> Path:
    """The path of an existing, non-empty file; otherwise a `RankrmError` naming it."""
    p = Path(path).expanduser()
    if not p.exists():
        raise RankrmError(f"data file not found: {p}")
    if not p.is_file():
        raise RankrmError(f"data path is not a file: {p}")
    with p.open("rb") as fh:
        head = fh.read(4096)
    if not head.strip(b" \t\r\n\xef\xbb\xbf") and p.stat().st_size < 4096:
        raise DataError(str(p), None, None, "file is empty")
    return p


def iter_lines(path: Path, log: DropLog) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for the non-blank lines of a UTF-8 file.

    CRLF endings and a leading BOM are removed. A line with bytes that are not UTF-8 is
    reported (reason `decode_error`) with its line number instead of failing the whole file.
    """
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                log.report(RecordError("decode_error", path, lineno, None, f"is not valid UTF-8 (byte {e.start})"))
                continue
            text = text.rstrip("\r\n")
            if text.strip():
                yield lineno, text


def parse_json_object(text: str, path: Path, line: int) -> dict[str, Any]:
    """One JSON object from one line (JSONL)."""
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError("invalid_json", path, line, None, f"invalid JSON: {e.msg} (column {e.colno})") from None
    if not isinstance(obj, dict):
        raise RecordError("wrong_type", path, line, None, f"expected a JSON object, got {type(obj).__name__}")
    return obj


def require(obj: dict[str, Any], field: str, path: Path, line: int) -> Any:
    """`obj[field]`, or a `missing_field` error."""
    if field not in obj or obj[field] is None:
        raise RecordError("missing_field", path, line, field, "is missing")
    return obj[field]


def check_text(value: Any, path: Path, line: int, field: str) -> str:
    """A non-blank string."""
    if not isinstance(value, str):
        raise RecordError("wrong_type", path, line, field, f"must be a string, got {type(value).__name__}")
    if not value.strip():
        raise RecordError("empty_response", path, line, field, "is empty or whitespace")
    return value


def check_score(value: Any, path: Path, line: int, field: str) -> float:
    """A finite real number (bools are rejected: `true` is not a score)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RecordError("bad_score", path, line, field, f"must be a number, got {value!r}")
    if not math.isfinite(value):
        raise RecordError("bad_score", path, line, field, f"must be finite, got {value!r}")
    return float(value)


def check_list(value: Any, path: Path, line: int, field: str) -> list[Any]:
    if not isinstance(value, list):
        raise RecordError("wrong_type", path, line, field, f"must be a list, got {type(value).__name__}")
    return value


def check_messages(value: Any, path: Path, line: int, field: str) -> list[Message]:
    """A chat: a non-empty list of {"role": str, "content": str} objects."""
    msgs = check_list(value, path, line, field)
    if not msgs:
        raise RecordError("wrong_type", path, line, field, "is an empty message list")
    out: list[Message] = []
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise RecordError("wrong_type", path, line, f"{field}[{i}]", 'must be {"role": str, "content": str}')
        out.append({"role": m["role"], "content": m["content"]})
    return out


def check_prompt(value: Any, path: Path, line: int, field: str = "prompt") -> Prompt:
    """None, a string (blank means no prompt) or a list of chat messages."""
    if value is None:
        return None
    if isinstance(value, str):
        return value if value.strip() else None
    if isinstance(value, list):
        return check_messages(value, path, line, field)
    raise RecordError(
        "wrong_type", path, line, field, f"must be a string or a message list, got {type(value).__name__}"
    )


def make_list(
    responses: Sequence[str],
    labels: Sequence[float],
    prompt: Prompt,
    path: Path,
    line: int,
    field: str = "responses",
) -> RankedList:
    """Build a `RankedList` after the list-level checks: K >= 2, labels match, no text twice
    with two different labels (a contradiction; the same text with the same label is allowed)."""
    if len(responses) != len(labels):
        raise RecordError(
            "length_mismatch", path, line, "scores", f"has {len(labels)} values for {len(responses)} responses"
        )
    if len(responses) < 2:
        raise RecordError("k<2", path, line, field, f"has {len(responses)} response(s); a ranked list needs at least 2")
    seen: dict[str, float] = {}
    for i, (text, lab) in enumerate(zip(responses, labels)):
        if text in seen and seen[text] != lab:
            raise RecordError(
                "duplicate_text",
                path,
                line,
                f"{field}[{i}]",
                f"repeats an earlier response with a different rank/label ({seen[text]} vs {lab})",
            )
        seen[text] = lab
    return RankedList(tuple(responses), tuple(float(x) for x in labels), prompt, f"{path}:{line}")


def strict_labels(k: int) -> tuple[float, ...]:
    """Labels of a plain best-first list: K-1, ..., 0."""
    return tuple(float(k - 1 - i) for i in range(k))


def all_tied(rl: RankedList) -> bool:
    """True if the list has no pair (every label equal): it carries no training signal."""
    return len(set(rl.labels)) <= 1
