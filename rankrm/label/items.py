"""What there is to label: prompts (answers generated later) or lists read by a rankrm reader.

An `Item` has a stable id computed from its content (not its line number), so an edited input
file, a restart, another annotator's process and the output file all agree on which item a
ranking belongs to. Identical items are merged and counted; so are identical answers inside one
list (the list reader rejects a text that appears twice with two different ranks).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.data.records import Prompt
from rankrm.data.validate import DropLog, RecordError, check_file, check_prompt, iter_lines, parse_json_object
from rankrm.errors import DataError, RankrmError


@dataclass(frozen=True)
class Item:
    """One thing to rank. `responses` is None until generated; `reference` holds the input file's
    labels (aligned with `responses`) when re-ranking, for the reward-model comparison."""

    id: str
    prompt: Prompt
    responses: tuple[str, ...] | None
    reference: tuple[float, ...] | None
    source: str


def content_id(kind: str, payload: Any) -> str:
    """`<kind>-<12 hex>`: a hash of the JSON of `payload` (stable across runs and machines)."""
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return f"{kind}-{hashlib.sha256(text.encode('utf-8')).hexdigest()[:12]}"


def inside(path: str | Path, data_dir: str | Path, key: str) -> Path:
    """`path` resolved (symlinks too); a `RankrmError` unless it lies inside `data_dir`."""
    root = Path(data_dir).expanduser().resolve()
    p = Path(path).expanduser().resolve()
    if p != root and root not in p.parents:
        raise RankrmError(
            f"{key}={path} is outside paths.data_dir ({root}): move the file there or set RANKRM_DATA_DIR"
        )
    return p


def _prompt_text(raw: str, path: Path, line: int) -> Prompt:
    """A .jsonl line holds {"prompt": text or messages}; a .txt line is the prompt itself."""
    if path.suffix.lower() != ".jsonl":
        return raw.strip()
    obj = parse_json_object(raw, path, line)
    prompt = check_prompt(obj.get("prompt"), path, line)
    if prompt is None:
        raise RecordError("missing_field", path, line, "prompt", "is missing or blank")
    return prompt


def read_prompts(path: Path, counts: Counter[str]) -> list[Item]:
    """Prompts, one per line (.txt) or {"prompt": ...} per line (.jsonl); repeats merged (counted)."""
    items: dict[str, Item] = {}
    for line, raw in iter_lines(check_file(path), DropLog()):
        prompt = _prompt_text(raw, path, line)
        iid = content_id("p", prompt)
        if iid in items:
            counts["repeated_prompts"] += 1
            continue
        items[iid] = Item(iid, prompt, None, None, f"{path}:{line}")
    return list(items.values())


def read_lists(path: Path, reader: str, counts: Counter[str]) -> list[Item]:
    """Lists read by any rankrm reader (`read_source`, all in one split), to rank again; repeated
    texts in a list and repeated lists merged (counted)."""
    from rankrm.data.sources import read_source

    try:
        read = read_source({"reader": reader, "path": str(path), "fractions": [1.0, 0.0, 0.0]}, seed=0)
    except DataError:
        raise
    except RankrmError as e:  # the reader's config message names data.source: say which label keys it was
        raise RankrmError(f"lists={path} reader={reader}: {e}") from None
    items: dict[str, Item] = {}
    for rl in read.splits["train"]:
        first: dict[str, float] = {}
        for text, label in zip(rl.responses, rl.labels):
            first.setdefault(text, label)  # same text, same label: the reader allows it; keep one
        counts["repeated_answers"] += rl.k - len(first)
        responses = tuple(first)
        iid = content_id("l", [rl.prompt, sorted(responses)])
        if iid in items:
            counts["repeated_lists"] += 1
            continue
        labels = tuple(first.values())
        if len(responses) < 2:
            counts["single_answer_lists"] += 1
            continue
        reference = labels if len(set(labels)) > 1 else None
        items[iid] = Item(iid, rl.prompt, responses, reference, rl.source)
    return list(items.values())


def prompt_lines(prompt: Prompt) -> list[tuple[str, str]]:
    """(role, text) pairs to show: a plain prompt is one user turn; None shows nothing."""
    if prompt is None:
        return []
    if isinstance(prompt, str):
        return [("user", prompt)]
    return [(m["role"], m["content"]) for m in prompt]
