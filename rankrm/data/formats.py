"""Record formats: how rows become `RankedList`s, whatever the source (a local file or a HF dataset).

A parser is a generator `(rows, log, counts, **options) -> (list, split group)`: it takes rows
`(where, line, value)` one at a time and yields validated lists one at a time, so nothing is
held beyond what one record (or one OASST tree) needs. An invalid record goes to the `DropLog`
(a `DataError` naming where:line:field, or counted per reason with `skip_invalid`); `counts`
takes the format's own facts for `stats` (e.g. OASST's `unranked_groups`).

Add a format: write `my_record(row, where, line, **options) -> RankedList` (raise
`RecordError` for a bad record) and register it in `FORMATS` as `per_row(my_record)`; a
format that needs several rows per list (trees) registers its own generator as `Format(parse)`.
The defaulted parameters of the registered function are the format's `data.source` options.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from rankrm.data.containers import Row
from rankrm.data.oasst import parse_oasst
from rankrm.data.records import Message, Prompt, RankedList
from rankrm.data.splits import Keyed, prompt_group
from rankrm.data.validate import (
    DropLog,
    RecordError,
    check_list,
    check_messages,
    check_prompt,
    check_score,
    check_text,
    make_list,
    require,
    strict_labels,
)

StreamParser = Callable[..., Iterator[Keyed]]  # (rows, log, counts, **options)


@dataclass(frozen=True)
class Format:
    """One entry of the format registry."""

    parse: StreamParser
    options: Callable[..., Any]  # its parameters with defaults are the format's data.source options
    rows: str = "object"  # what a row must be: "object" (a mapping) or "columns" (a TSV line)
    container: str = "jsonl"  # the container of a local file whose suffix names none
    reader: str | None = None  # the data.source.reader name meaning "a local file in this format"
    doc: str = ""


@dataclass(frozen=True)
class Parsing:
    """A format with its options bound: `stream` turns rows into (list, group) pairs, lazily."""

    name: str
    format: Format
    options: dict[str, Any] = field(default_factory=dict)

    def stream(self, rows: Iterable[Row], log: DropLog, counts: Counter[str]) -> Iterator[Keyed]:
        return self.format.parse(rows, log, counts, **self.options)


def per_row(record: Callable[..., RankedList], **kw: Any) -> Format:
    """A `Format` whose every row is one list, built by `record(value, where, line, **options)`."""

    def parse(rows: Iterable[Row], log: DropLog, counts: Counter[str], **options: Any) -> Iterator[Keyed]:
        for where, line, value in rows:
            try:
                rl = record(value, where, line, **options)
            except RecordError as e:
                log.report(e)
                continue
            yield rl, prompt_group(rl)

    return Format(parse, record, **kw)


def list_texts(obj: dict[str, Any], path: str, line: int) -> tuple[Prompt, list[str]]:
    """The `prompt` (optional) and `responses` of a list record (also what `rankrm.score` reads)."""
    raw = check_list(require(obj, "responses", path, line), path, line, "responses")
    responses = [check_text(r, path, line, f"responses[{i}]") for i, r in enumerate(raw)]
    return check_prompt(obj.get("prompt"), path, line), responses


def list_record(obj: dict[str, Any], path: str, line: int) -> RankedList:
    """A list record: `responses` (best first) or `responses` + `scores`, optional `prompt`."""
    prompt, responses = list_texts(obj, path, line)
    if obj.get("scores") is not None:
        scores = check_list(obj["scores"], path, line, "scores")
        labels: tuple[float, ...] = tuple(check_score(s, path, line, f"scores[{i}]") for i, s in enumerate(scores))
    else:
        labels = strict_labels(len(responses))
    return make_list(responses, labels, prompt, path, line)


def _completion(msgs: list[Message], path: str, line: int, fld: str) -> str:
    """The text of a conversational completion: exactly one (assistant) message."""
    if len(msgs) != 1:
        raise RecordError("wrong_type", path, line, fld, f"must hold exactly one reply message, got {len(msgs)}")
    return check_text(msgs[0]["content"], path, line, f"{fld}[0].content")


def _pair(texts: list[str], prompt: Any, path: str, line: int) -> RankedList:
    if texts[0] == texts[1]:
        raise RecordError("duplicate_text", path, line, "rejected", "is identical to chosen")
    return make_list(texts, (1.0, 0.0), prompt, path, line, "chosen")


def pair_record(obj: dict[str, Any], path: str, line: int) -> RankedList:
    """A TRL preference record -> a K=2 list (chosen > rejected).

    Plain text: `prompt`? + `chosen`/`rejected` strings. Conversational: message lists; without
    a `prompt`, the messages shared by `chosen` and `rejected` become the prompt (TRL's implicit
    prompt) and each side must end in one differing reply.
    """
    chosen, rejected = require(obj, "chosen", path, line), require(obj, "rejected", path, line)
    prompt = check_prompt(obj.get("prompt"), path, line)
    if isinstance(chosen, str) and isinstance(rejected, str):
        texts = [check_text(chosen, path, line, "chosen"), check_text(rejected, path, line, "rejected")]
        return _pair(texts, prompt, path, line)
    c_msgs = check_messages(chosen, path, line, "chosen")
    r_msgs = check_messages(rejected, path, line, "rejected")
    if prompt is None:
        n = 0
        while n < min(len(c_msgs), len(r_msgs)) - 1 and c_msgs[n] == r_msgs[n]:
            n += 1
        prompt, c_msgs, r_msgs = (c_msgs[:n] or None), c_msgs[n:], r_msgs[n:]
    elif isinstance(prompt, str):
        prompt = [{"role": "user", "content": prompt}]
    texts = [_completion(c_msgs, path, line, "chosen"), _completion(r_msgs, path, line, "rejected")]
    return _pair(texts, prompt, path, line)


def ultrafeedback_record(row: dict[str, Any], path: str, line: int, score_field: str = "overall_score") -> RankedList:
    """An UltraFeedback row: `instruction` + `completions` (list of dicts, or dict of lists) -> one
    graded list, labels = the `score_field` of each completion."""
    comps = require(row, "completions", path, line)
    if isinstance(comps, dict):  # a `datasets` Sequence of structs comes back column-wise
        keys = list(comps)
        comps = [dict(zip(keys, vals)) for vals in zip(*(comps[k] for k in keys))]
    comps = check_list(comps, path, line, "completions")
    texts, labels = [], []
    for i, c in enumerate(comps):
        if not isinstance(c, dict):
            raise RecordError("wrong_type", path, line, f"completions[{i}]", "must be an object")
        texts.append(check_text(c.get("response"), path, line, f"completions[{i}].response"))
        labels.append(check_score(c.get(score_field), path, line, f"completions[{i}].{score_field}"))
    prompt = check_prompt(row.get("prompt", row.get("instruction")), path, line, "instruction")
    return make_list(texts, labels, prompt, path, line, "completions")


def tsv_record(cols: list[str], path: str, line: int) -> RankedList:
    """The seed article's line: responses best first, one per column, no prompt."""
    if not isinstance(cols, list):
        raise RecordError("wrong_type", path, line, None, "must be a line of TAB-separated columns")
    responses = [check_text(c, path, line, f"column {i + 1}") for i, c in enumerate(cols)]
    return make_list(responses, strict_labels(len(responses)), None, path, line, "columns")


FORMATS: dict[str, Format] = {
    "list": per_row(
        list_record,
        reader="jsonl",
        doc='{"prompt"?: str | messages, "responses": [best first], "scores"?: [higher better, ties ok]}',
    ),
    "pairs": per_row(pair_record, reader="trl_pairs", doc="TRL preference rows: prompt?, chosen, rejected"),
    "ultrafeedback": per_row(ultrafeedback_record, doc="instruction + completions [{response, overall_score}]"),
    "seed_tsv": per_row(
        tsv_record, rows="columns", container="tsv", reader="seed_tsv", doc="TAB-separated responses, best first"
    ),
    "oasst": Format(
        parse_oasst, parse_oasst, reader="oasst", doc="OpenAssistant trees (nested export) or messages (oasst1 rows)"
    ),
}
