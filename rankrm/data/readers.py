"""File readers: seed TSV, list JSONL, TRL preference pairs, OpenAssistant message trees.

Each reader turns one file into `Items`: the `RankedList`s plus a *group* key per list (lists
with one group never straddle two splits: the prompt for JSONL/TRL, the tree id for OASST).
Malformed records go to the `DropLog` (raise, or count when `skip_invalid`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrm.data.records import Message, RankedList
from rankrm.data.validate import (
    DropLog,
    RecordError,
    check_file,
    check_list,
    check_messages,
    check_prompt,
    check_score,
    check_text,
    iter_lines,
    make_list,
    parse_json_object,
    require,
    strict_labels,
)
from rankrm.errors import DataError


@dataclass
class Items:
    """Lists read from one source, a split group per list, and reader-specific counts."""

    lists: list[RankedList] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def add(self, rl: RankedList, group: str | None = None) -> None:
        self.lists.append(rl)
        self.groups.append(group if group is not None else _prompt_group(rl))

    def extend(self, other: Items) -> None:
        self.lists += other.lists
        self.groups += other.groups
        self.counts.update(other.counts)


def _prompt_group(rl: RankedList) -> str:
    """Lists that share a prompt share a split (no prompt leaks from train into test)."""
    if rl.prompt is None:
        return rl.source
    return "prompt:" + json.dumps(rl.prompt, sort_keys=True, ensure_ascii=False)


LineParser = Callable[[str, Path, int, Items, DropLog], None]


def _read_lines(path: str | Path, log: DropLog, parse: LineParser) -> Items:
    """Run `parse` on every non-blank line; a record error is reported, then reading goes on."""
    p = check_file(path)
    items = Items()
    n_lines = 0
    for lineno, text in iter_lines(p, log):
        n_lines += 1
        try:
            parse(text, p, lineno, items, log)
        except RecordError as e:
            log.report(e)
    if n_lines == 0 and not log.counts:
        raise DataError(str(p), None, None, "contains no records")
    return items


def unquote_csv(text: str) -> str:
    """Strip CSV-style quoting: `"a ""b"" c"` -> `a "b" c` (texts copied verbatim from a CSV)."""
    if len(text) >= 2 and text[0] == '"' and text[-1] == '"':
        return text[1:-1].replace('""', '"')
    return text


def _parse_tsv(text: str, path: Path, line: int, items: Items, log: DropLog) -> None:
    cols = [unquote_csv(c) for c in text.split("\t")]
    responses = [check_text(c, path, line, f"column {i + 1}") for i, c in enumerate(cols)]
    items.add(make_list(responses, strict_labels(len(responses)), None, path, line, "columns"))


def read_seed_tsv(path: str | Path, log: DropLog) -> Items:
    """One best-first list per line, responses separated by TABs, no header, no prompt."""
    return _read_lines(path, log, _parse_tsv)


def list_record(obj: dict[str, Any], path: Path, line: int) -> RankedList:
    """A list record: `responses` (best first) or `responses` + `scores`, optional `prompt`."""
    raw = check_list(require(obj, "responses", path, line), path, line, "responses")
    responses = [check_text(r, path, line, f"responses[{i}]") for i, r in enumerate(raw)]
    if obj.get("scores") is not None:
        scores = check_list(obj["scores"], path, line, "scores")
        labels: tuple[float, ...] = tuple(check_score(s, path, line, f"scores[{i}]") for i, s in enumerate(scores))
    else:
        labels = strict_labels(len(responses))
    return make_list(responses, labels, check_prompt(obj.get("prompt"), path, line), path, line)


def _parse_jsonl(text: str, path: Path, line: int, items: Items, log: DropLog) -> None:
    items.add(list_record(parse_json_object(text, path, line), path, line))


def read_jsonl(path: str | Path, log: DropLog) -> Items:
    """`{"prompt"?: str | messages, "responses": [...], "scores"?: [...]}` per line.

    Without `scores` the responses are best first; with `scores` higher is better, ties allowed.
    """
    return _read_lines(path, log, _parse_jsonl)


def _completion(msgs: list[Message], path: Path, line: int, fld: str) -> str:
    """The text of a conversational completion: exactly one (assistant) message."""
    if len(msgs) != 1:
        raise RecordError("wrong_type", path, line, fld, f"must hold exactly one reply message, got {len(msgs)}")
    return check_text(msgs[0]["content"], path, line, f"{fld}[0].content")


def _pair(texts: list[str], prompt: Any, path: Path, line: int) -> RankedList:
    if texts[0] == texts[1]:
        raise RecordError("duplicate_text", path, line, "rejected", "is identical to chosen")
    return make_list(texts, (1.0, 0.0), prompt, path, line, "chosen")


def pair_record(obj: dict[str, Any], path: Path, line: int) -> RankedList:
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


def _parse_trl(text: str, path: Path, line: int, items: Items, log: DropLog) -> None:
    items.add(pair_record(parse_json_object(text, path, line), path, line))


def read_trl_pairs(path: str | Path, log: DropLog) -> Items:
    """TRL's preference JSONL (`chosen`/`rejected`, optional `prompt`), each pair a K=2 list."""
    return _read_lines(path, log, _parse_trl)


_OASST_ROLES = {"prompter": "user", "assistant": "assistant"}


def _oasst_message(node: Any, path: Path, line: int, where: str) -> Message:
    if not isinstance(node, dict):
        raise RecordError("wrong_type", path, line, where, "must be a message object")
    role = node.get("role")
    if role not in _OASST_ROLES:
        raise RecordError("wrong_type", path, line, f"{where}.role", f"must be prompter or assistant, got {role!r}")
    return {"role": _OASST_ROLES[role], "content": check_text(node.get("text"), path, line, f"{where}.text")}


Child = tuple[int, Any, "Message | None"]  # (index in replies, raw node, its message or None if invalid)


def _children(node: dict[str, Any], where: str, path: Path, line: int, log: DropLog) -> list[Child]:
    """A node's replies, each validated once (an invalid one is reported here and gets None)."""
    try:
        replies = check_list(node.get("replies") or [], path, line, f"{where}.replies")
    except RecordError as e:
        log.report(e)
        return []
    out: list[Child] = []
    for i, r in enumerate(replies):
        try:
            out.append((i, r, _oasst_message(r, path, line, f"{where}.replies[{i}]")))
        except RecordError as e:
            log.report(e)
            out.append((i, r, None))
    return out


def _walk(root: Any, path: Path, line: int, log: DropLog) -> Iterator[tuple[str, list[Message], list[Child]]]:
    """Depth-first (where, dialogue up to and including the node, its replies) over a message tree.
    The subtree under an invalid message is skipped (its dialogue cannot be built)."""
    stack: list[tuple[str, Any, list[Message]]] = [("prompt", root, [_oasst_message(root, path, line, "prompt")])]
    while stack:
        where, node, dialogue = stack.pop()
        children = _children(node, where, path, line, log)
        yield where, dialogue, children
        for i, r, msg in reversed(children):
            if msg is not None:
                stack.append((f"{where}.replies[{i}]", r, dialogue + [msg]))


def _oasst_group(
    where: str, dialogue: list[Message], children: list[Child], path: Path, line: int, items: Items
) -> RankedList | None:
    """The ranked list of a node's assistant replies, or None: fewer than 2, one invalid (already
    reported), or some without a rank (counted as `unranked_groups`)."""
    replies = [(i, r, m) for i, r, m in children if isinstance(r, dict) and r.get("role") == "assistant"]
    if len(replies) < 2 or any(m is None for _, _, m in replies):
        return None
    if any(r.get("rank") is None for _, r, _ in replies):
        items.counts["unranked_groups"] += 1
        return None
    ranks = [check_score(r["rank"], path, line, f"{where}.replies[{i}].rank") for i, r, _ in replies]
    order = sorted(range(len(replies)), key=lambda j: ranks[j])  # rank 0 = best
    texts = [replies[j][2]["content"] for j in order]  # type: ignore[index]
    labels = [max(ranks) - ranks[j] for j in order]  # higher = better, tied ranks stay tied
    return make_list(texts, labels, dialogue, path, line, f"{where}.replies")


def _parse_oasst(text: str, path: Path, line: int, items: Items, log: DropLog) -> None:
    tree = parse_json_object(text, path, line)
    root = require(tree, "prompt", path, line)
    tree_id = str(tree.get("message_tree_id") or f"{path}:{line}")
    for where, dialogue, children in _walk(root, path, line, log):
        try:
            rl = _oasst_group(where, dialogue, children, path, line, items)
        except RecordError as e:  # one bad sibling group drops that group only, not the tree
            log.report(e)
            continue
        if rl is not None:
            items.add(rl, group=f"tree:{tree_id}")


def read_oasst(path: str | Path, log: DropLog) -> Items:
    """OpenAssistant message trees (oasst1 `*.trees.jsonl` export), one tree per line.

    Every message whose assistant replies all carry a `rank` (0 = best) becomes one list whose
    prompt is the dialogue up to that message (prompter -> user, assistant -> assistant).
    Groups with unranked replies are skipped and counted (`unranked_groups`). The split group
    is the tree, so no tree is in two splits.
    """
    return _read_lines(path, log, _parse_oasst)


FILE_READERS: dict[str, Callable[[str | Path, DropLog], Items]] = {
    "seed_tsv": read_seed_tsv,
    "jsonl": read_jsonl,
    "trl_pairs": read_trl_pairs,
    "oasst": read_oasst,
}
