"""The label files: append-only JSONL shared by threads and processes, never a half line.

Three files, each one JSON object per line:
- `<out>` (e.g. `labels.jsonl`): one ranking per line, in rankrm's list format
  `{"prompt", "responses" (best first), "scores" (higher better, ties equal), "annotation": {...}}`;
  `data=jsonl` trains on it as is (its reader ignores keys it does not know);
- `<stem>.skips.jsonl`: skipped items (no ranking, so not training data);
- `<stem>.answers.jsonl`: generated answers, so every annotator and every restart ranks the same ones.

Writes: one `os.write` of a whole line on an `O_APPEND` descriptor, then fsync, under a file lock
(`<out>.lock`, `filelock`) that every process writing these files takes, plus a thread lock for
the threads of one server: lines never interleave, none is lost. Signals do not interrupt a write
to a regular file, except a fatal one: Linux may cut it short when the process is SIGKILLed or
exits mid-copy, and a power loss may too. That torn last line has no newline; readers here stop at
the last newline, and the next start or append moves it to `<file>.torn` first, so the file again
holds only whole lines.

Reads are incremental (each file's byte offset is kept), so a save costs the new lines only.
Memory: every record is kept in memory (O(lines)); time per save O(lines written since the last read).
"""

from __future__ import annotations

import json
import os
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock

from rankrm.errors import RankrmError


class JsonlLog:
    """One append-only JSONL file: `refresh()` returns the whole lines added since the last call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.bad_lines = 0  # lines that are not JSON objects (hand edits): counted, never fatal

    def refresh(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with self.path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a torn last line is left for repair_tail
        self.offset += end
        out = []
        for raw in data[:end].splitlines():
            if not raw.strip():
                continue
            try:
                obj = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                obj = None
            if isinstance(obj, dict):
                out.append(obj)
            else:
                self.bad_lines += 1
        return out

    def repair_tail(self) -> int:
        """Move a torn last line (no trailing newline) to `<file>.torn`; return its size in bytes."""
        if not self.path.exists():
            return 0
        with self.path.open("r+b") as f:
            size = f.seek(0, os.SEEK_END)
            if size == 0:
                return 0
            f.seek(size - 1)
            if f.read(1) == b"\n":  # the usual case: one byte read
                return 0
            f.seek(0)
            data = f.read()  # rare: only after a crash mid-write
            torn = data[data.rfind(b"\n") + 1 :]
            with open(f"{self.path}.torn", "ab") as t:
                t.write(torn + b"\n")
            f.truncate(size - len(torn))
            f.flush()
            os.fsync(f.fileno())
        return len(torn)

    def append(self, obj: dict[str, Any]) -> None:
        """One whole line in one write (the caller holds the lock)."""
        self.repair_tail()
        line = (json.dumps(obj, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            written = os.write(fd, line)
            if written != len(line):  # a full disk; the next append's repair_tail removes the part
                raise RankrmError(f"{self.path}: short write ({written} of {len(line)} bytes): is the disk full?")
            os.fsync(fd)
        finally:
            os.close(fd)


def sidecar(out: Path, name: str) -> Path:
    """`data/labels.jsonl` -> `data/labels.<name>.jsonl`."""
    return out.with_name(f"{out.stem}.{name}.jsonl")


class LabelStore:
    """Rankings, skips and generated answers of one output file, kept in sync with the disk."""

    def __init__(self, out: Path) -> None:
        self.out = out
        self.labels, self.skips, self.answers_log = (
            JsonlLog(out),
            JsonlLog(sidecar(out, "skips")),
            JsonlLog(sidecar(out, "answers")),
        )
        self._flock = FileLock(f"{out}.lock")
        self._tlock = threading.RLock()
        self.rankings: dict[str, dict[str, dict[str, Any]]] = {}  # item -> annotator -> output line
        self.skipped: dict[tuple[str, str], dict[str, Any]] = {}  # (item, annotator) -> skip record
        self.answers: dict[str, tuple[str, ...]] = {}  # item -> generated answers
        self.counts: Counter[str] = Counter()
        self.version = 0  # bumps when new records arrive (caches key on it)
        with self.locked():
            for log in (self.labels, self.skips, self.answers_log):
                self.counts["torn_bytes_moved"] += log.repair_tail()
            self.refresh()

    @contextmanager
    def locked(self) -> Iterator[None]:
        with self._tlock, self._flock:
            yield

    def refresh(self) -> None:
        """Read what any process appended since the last call."""
        with self._tlock:
            new = self._ingest_labels() + self._ingest_skips() + self._ingest_answers()
            if new:
                self.version += 1

    def _ingest_labels(self) -> int:
        recs = self.labels.refresh()
        for rec in recs:
            ann = rec.get("annotation")
            if not isinstance(ann, dict) or not {"item", "annotator", "index"} <= set(ann):
                self.counts["lines_without_annotation"] += 1  # lists added by other means: trainable, not ours
                continue
            by = self.rankings.setdefault(str(ann["item"]), {})
            if str(ann["annotator"]) in by:
                self.counts["repeated_rankings"] += 1  # e.g. a hand-merged file: the last one counts
            by[str(ann["annotator"])] = rec
        return len(recs)

    def _ingest_skips(self) -> int:
        recs = self.skips.refresh()
        for rec in recs:
            self.skipped[(str(rec.get("item")), str(rec.get("annotator")))] = rec
        return len(recs)

    def _ingest_answers(self) -> int:
        recs = self.answers_log.refresh()
        for rec in recs:
            resp = rec.get("responses")
            if isinstance(resp, list) and len(resp) >= 2:
                self.answers.setdefault(str(rec.get("item")), tuple(str(r) for r in resp))  # first writer wins
        return len(recs)

    def add_ranking(self, record: dict[str, Any]) -> bool:
        """Append a ranking unless this annotator already ranked this item (False then)."""
        ann = record["annotation"]
        with self.locked():
            self.refresh()
            if ann["annotator"] in self.rankings.get(ann["item"], {}):
                return False
            self.labels.append(record)
            self.refresh()
        return True

    def add_skip(self, record: dict[str, Any]) -> None:
        with self.locked():
            self.skips.append(record)
            self.refresh()

    def add_answers(self, item: str, responses: tuple[str, ...], info: dict[str, Any]) -> tuple[str, ...]:
        """Store generated answers for `item`; if another process stored some first, return those."""
        with self.locked():
            self.refresh()
            if item not in self.answers:
                self.answers_log.append({"item": item, "responses": list(responses), **info})
                self.refresh()
            return self.answers[item]

    def done_by(self, annotator: str) -> set[str]:
        return {item for item, by in self.rankings.items() if annotator in by}
