"""A person's ordering -> one line of rankrm's list JSONL, and back to scores per answer.

The page sends the answers top to bottom (`order`, indices into the item's answers) and, per
position, whether it is tied with the one above (`tied`). That gives tiers, best first; tier t
of T scores T-1-t, so higher is better and ties are equal, as `data=jsonl` expects. The line
also records `annotation.index`: for each written response, its index among the item's answers,
so two people's rankings of one item can be compared answer by answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from rankrm.errors import RankrmError
from rankrm.label.items import Item

NOTE_MAX = 500  # characters of the flag note kept


def tiers_from(order: Sequence[int], tied: Sequence[bool], k: int) -> list[list[int]]:
    """Positions top to bottom -> tiers best first; `tied[p]` puts position p in the tier of p-1.
    Anything but a permutation of range(k) is refused (the page is a client: never trusted)."""
    if sorted(order) != list(range(k)) or len(tied) != k:
        raise RankrmError(f"a ranking must order all {k} answers once, got order={list(order)} tied={list(tied)}")
    tiers: list[list[int]] = []
    for pos, idx in enumerate(order):
        if pos > 0 and tied[pos]:
            tiers[-1].append(int(idx))
        else:
            tiers.append([int(idx)])
    return tiers


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def ranking_record(
    item: Item,
    answers: Sequence[str],
    tiers: list[list[int]],
    annotator: str,
    seconds: float | None,
    flagged: bool = False,
    note: str = "",
) -> dict[str, Any]:
    """The output line: prompt, responses best first, scores (ties equal), and the annotation."""
    order = [i for tier in tiers for i in tier]
    n = len(tiers)
    rec: dict[str, Any] = {} if item.prompt is None else {"prompt": item.prompt}
    rec["responses"] = [answers[i] for i in order]
    rec["scores"] = [n - 1 - t for t, tier in enumerate(tiers) for _ in tier]
    rec["annotation"] = {
        "item": item.id,
        "annotator": annotator,
        "time": now_iso(),
        "seconds": None if seconds is None else round(float(seconds), 1),
        "index": order,
        "flagged": bool(flagged),
        "note": str(note)[:NOTE_MAX],
    }
    return rec


def aligned(rec: dict[str, Any]) -> tuple[tuple[str, ...], list[float]] | None:
    """(the item's answers in their own order, the scores of each) from an output line; None when
    the line's `annotation.index` does not match its responses (a hand edit)."""
    index, responses, scores = rec["annotation"].get("index"), rec.get("responses"), rec.get("scores")
    if not (isinstance(index, list) and isinstance(responses, list) and isinstance(scores, list)):
        return None
    k = len(index)
    if len(responses) != k or len(scores) != k or sorted(index) != list(range(k)):
        return None
    answers, out = [""] * k, [0.0] * k
    for pos, i in enumerate(index):
        answers[i], out[i] = str(responses[pos]), float(scores[pos])
    return tuple(answers), out
