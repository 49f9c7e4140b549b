"""OpenAssistant message trees -> one ranked list per group of ranked sibling replies.

Two row layouts, both of `OpenAssistant/oasst1` (and oasst2):
- nested: the `*.trees.jsonl` export, one tree per row (`message_tree_id`, `prompt` holding
  the root message, replies nested under `replies`);
- flat: one message per row (`message_id`, `parent_id`, `message_tree_id`, `role`, `text`,
  `rank`), the layout of the hub dataset. Its rows are gathered per tree and the trees are read
  when the rows end, in the order their first row came: memory grows with the messages of
  all flat trees (oasst1: ~88k messages), not with one tree.

Every message whose assistant replies all carry a `rank` (0 = best) gives one list whose
prompt is the dialogue up to that message (prompter -> user, assistant -> assistant). Groups
with unranked replies are skipped and counted (`unranked_groups`). The split group is the tree.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from typing import Any

from rankrm.data.containers import Row
from rankrm.data.records import Message, RankedList
from rankrm.data.splits import Keyed
from rankrm.data.validate import DropLog, RecordError, check_list, check_score, check_text, make_list, require

_ROLES = {"prompter": "user", "assistant": "assistant"}
_LINE = "_rankrm_line"  # set on nodes built from flat rows: the row a message came from


def _at(node: Any, line: int, where: str) -> tuple[int, str]:
    """(line, field prefix) for errors about `node`: a flat row names its own line and plain fields."""
    if isinstance(node, dict) and _LINE in node:
        return node[_LINE], ""
    return line, f"{where}."


def _message(node: Any, path: str, line: int, where: str) -> Message:
    if not isinstance(node, dict):
        raise RecordError("wrong_type", path, line, where, "must be a message object")
    line, pre = _at(node, line, where)
    role = node.get("role")
    if role not in _ROLES:
        raise RecordError("wrong_type", path, line, f"{pre}role", f"must be prompter or assistant, got {role!r}")
    return {"role": _ROLES[role], "content": check_text(node.get("text"), path, line, f"{pre}text")}


Child = tuple[int, Any, "Message | None"]  # (index in replies, raw node, its message or None if invalid)


def _children(node: dict[str, Any], where: str, path: str, line: int, log: DropLog) -> list[Child]:
    """A node's replies, each validated once (an invalid one is reported here and gets None)."""
    try:
        replies = check_list(node.get("replies") or [], path, line, f"{where}.replies")
    except RecordError as e:
        log.report(e)
        return []
    out: list[Child] = []
    for i, r in enumerate(replies):
        try:
            out.append((i, r, _message(r, path, line, f"{where}.replies[{i}]")))
        except RecordError as e:
            log.report(e)
            out.append((i, r, None))
    return out


Visit = tuple[str, dict[str, Any], list[Message], list[Child]]  # (where, node, dialogue up to it, its replies)


def _walk(root: Any, path: str, line: int, log: DropLog) -> Iterator[Visit]:
    """Depth-first over a message tree. The subtree under an invalid message is skipped (its
    dialogue cannot be built)."""
    stack: list[tuple[str, Any, list[Message]]] = [("prompt", root, [_message(root, path, line, "prompt")])]
    while stack:
        where, node, dialogue = stack.pop()
        children = _children(node, where, path, line, log)
        yield where, node, dialogue, children
        for i, r, msg in reversed(children):
            if msg is not None:
                stack.append((f"{where}.replies[{i}]", r, dialogue + [msg]))


def _group(visit: Visit, path: str, line: int, counts: Counter[str]) -> RankedList | None:
    """The ranked list of a node's assistant replies, or None: fewer than 2, one invalid (already
    reported), or some without a rank (counted as `unranked_groups`)."""
    where, node, dialogue, children = visit
    replies = [(i, r, m) for i, r, m in children if isinstance(r, dict) and r.get("role") == "assistant"]
    if len(replies) < 2 or any(m is None for _, _, m in replies):
        return None
    if any(r.get("rank") is None for _, r, _ in replies):
        counts["unranked_groups"] += 1
        return None
    ranks = []
    for i, r, _ in replies:
        at, pre = _at(r, line, f"{where}.replies[{i}]")
        ranks.append(check_score(r["rank"], path, at, f"{pre}rank"))
    order = sorted(range(len(replies)), key=lambda j: ranks[j])  # rank 0 = best
    texts = [replies[j][2]["content"] for j in order]  # type: ignore[index]
    labels = [max(ranks) - ranks[j] for j in order]  # higher = better, tied ranks stay tied
    at, pre = _at(node, line, where)
    return make_list(texts, labels, dialogue, path, at, f"{pre}replies")


def _tree_lists(root: Any, tree_id: str, path: str, line: int, log: DropLog, counts: Counter[str]) -> Iterator[Keyed]:
    """The lists of one tree; one bad sibling group drops that group only, not the tree."""
    for visit in _walk(root, path, line, log):
        try:
            rl = _group(visit, path, line, counts)
        except RecordError as e:
            log.report(e)
            continue
        if rl is not None:
            yield rl, f"tree:{tree_id}"


def _nest(rows: list[Row], log: DropLog) -> dict[str, Any] | None:
    """A tree in the nested layout from its flat message rows (the root node), or None without a root.
    A message that cannot hang anywhere is reported; its subtree is skipped."""
    nodes: dict[Any, dict[str, Any]] = {}
    for where, line, m in rows:
        if m.get("message_id") in nodes:
            log.report(RecordError("duplicate_id", where, line, "message_id", "repeats an earlier message's id"))
            continue
        nodes[m.get("message_id")] = {**m, "replies": [], _LINE: line}
    root: dict[str, Any] | None = None
    for node in nodes.values():
        parent, where, line = node.get("parent_id"), rows[0][0], node[_LINE]
        if parent is None and root is None:
            root = node
        elif parent is None or parent not in nodes:
            what = "is a second root of its tree" if parent is None else f"names no message of its tree ({parent!r})"
            log.report(RecordError("orphan_message", where, line, "parent_id", what))
        else:
            nodes[parent]["replies"].append(node)
    if root is None:
        where, line, _ = rows[0]
        log.report(RecordError("orphan_message", where, line, "parent_id", "no message of this tree is its root"))
    return root


def parse_oasst(rows: Iterable[Row], log: DropLog, counts: Counter[str]) -> Iterator[Keyed]:
    """OASST rows (either layout, see the module docstring) -> (list, tree group)."""
    flat: dict[str, list[Row]] = {}  # tree id -> its message rows, in row order
    for where, line, row in rows:
        try:
            if "message_id" in row and "prompt" not in row:
                tree_id = str(require(row, "message_tree_id", where, line))
                flat.setdefault(tree_id, []).append((where, line, row))
                continue
            root = require(row, "prompt", where, line)
            tree_id = str(row.get("message_tree_id") or f"{where}:{line}")
            yield from _tree_lists(root, tree_id, where, line, log, counts)
        except RecordError as e:
            log.report(e)
    for tree_id, msgs in flat.items():
        root = _nest(msgs, log)
        try:
            if root is not None:
                yield from _tree_lists(root, tree_id, msgs[0][0], root[_LINE], log, counts)
        except RecordError as e:
            log.report(e)
