"""One labelling job: the items, the store, the generator and the optional reward model.

Shared by every browser session of a server (Streamlit runs each in its own thread) and the
only place that decides what an annotator sees next:
- an annotator's queue is every item they have neither ranked nor skipped, then the ones they
  skipped (oldest skip first); `annotations_per_item=N` also drops items N people ranked;
- with a reward model, items with a reference order (people's mean scores, else the input
  file's labels) come first, the model's Kendall tau-b with it ascending (it disagrees most
  first), then the rest in file order (active learning);
- answers are generated on first view and stored, and the next `sampling.prefetch` items of
  the queue are generated in a background thread while the person ranks.

Memory: all items, answers and rankings (O(items x K)); a page view costs O(items) to rebuild
the queue, and sorting by the model O(items x K^2) once per new ranking.
"""

from __future__ import annotations

import logging
import math
import queue
import random
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

from rankrm.errors import RankrmError
from rankrm.label.agreement import annotator_agreement, consensus, model_agreement, tau_b
from rankrm.label.generate import Generator
from rankrm.label.items import Item
from rankrm.label.ranking import NOTE_MAX, now_iso, ranking_record, tiers_from
from rankrm.label.store import LabelStore

log = logging.getLogger("rankrm.label")


class Scorer:
    """An exported rankrm reward model (`outputs/<run>/model`), loaded once, scoring lists of answers."""

    def __init__(self, model_dir: str) -> None:
        from rankrm.reward import load_reward_model

        self.model_dir = model_dir
        self.rm = load_reward_model(model_dir)  # scores exactly as training encoded its inputs
        self._lock = threading.Lock()

    def score(self, pairs: Sequence[tuple[Item, tuple[str, ...]]]) -> list[list[float]]:
        from rankrm.data.records import RankedList
        from rankrm.reward import score_lists

        lists = [RankedList(ans, tuple(0.0 for _ in ans), it.prompt, it.source) for it, ans in pairs]
        with self._lock:
            return score_lists(self.rm, lists)


class LabelSession:
    def __init__(
        self,
        items: list[Item],
        store: LabelStore,
        k: int,
        generator: Generator | None = None,
        scorer: Scorer | None = None,
        shuffle: bool = True,
        per_item: int | None = None,
        counts: Counter[str] | None = None,
    ) -> None:
        self.items, self.store, self.k = items, store, k
        self.by_id = {it.id: it for it in items}
        self.generator, self.scorer, self.shuffle, self.per_item = generator, scorer, shuffle, per_item
        self.counts = counts if counts is not None else Counter()
        self.model_scores: dict[str, list[float]] = {}
        self._lock = threading.Lock()
        self._order: tuple[tuple[int, int], list[Item]] | None = None
        self._tables: dict[tuple[str, int, int], list[dict[str, Any]]] = {}
        self._pending: set[str] = set()
        self._jobs: queue.Queue[Item] = queue.Queue()
        self._worker: threading.Thread | None = None

    # --- answers ---------------------------------------------------------------------------
    def known_answers(self, item: Item) -> tuple[str, ...] | None:
        return item.responses if item.responses is not None else self.store.answers.get(item.id)

    def answers(self, item: Item) -> tuple[str, ...]:
        """The item's answers, generated (and stored for everyone) on first use."""
        known = self.known_answers(item)
        if known is not None:
            return known
        if self.generator is None:
            raise RankrmError(f"item {item.id} has no answers and no generator is configured")
        got = self.generator.answers(item.id, item.prompt, self.k)
        if len(got) < 2:
            raise RankrmError(f"the generator gave {len(got)} distinct answer(s) to {item.source}; a list needs 2")
        info = {"generator": self.generator.name, "time": now_iso(), **self.generator.sampling}
        stored = self.store.add_answers(item.id, got, info)
        self._score([item])
        return stored

    def prefetch(self, annotator: str) -> None:
        """Generate the next items' answers in the background (one thread, the model's lock)."""
        n = int(self.generator.sampling.get("prefetch", 1)) if self.generator else 0
        todo = [it for it in self.queue(annotator)[1 : 1 + n] if self.known_answers(it) is None]
        for it in todo:
            with self._lock:
                if it.id in self._pending:
                    continue
                self._pending.add(it.id)
                if self._worker is None:
                    # A daemon thread: Ctrl+C stops the server at once, not after the generation in progress.
                    self._worker = threading.Thread(target=self._prefetch_loop, name="rankrm-prefetch", daemon=True)
                    self._worker.start()
            self._jobs.put(it)

    def _prefetch_loop(self) -> None:
        while True:
            item = self._jobs.get()
            try:
                self.answers(item)
            except Exception as e:  # shown again, with its message, when the item comes up on the page
                log.warning("prefetch of %s failed: %s", item.id, e)
            finally:
                with self._lock:
                    self._pending.discard(item.id)

    # --- the reward model ------------------------------------------------------------------
    def _score(self, items: Sequence[Item]) -> None:
        if self.scorer is None:
            return
        todo = [(it, a) for it in items if it.id not in self.model_scores and (a := self.known_answers(it))]
        for (it, _), s in zip(todo, self.scorer.score(todo) if todo else []):
            self.model_scores[it.id] = s

    def score_known(self) -> None:
        """Score every item whose answers are known (at start: the input lists, the stored answers)."""
        self._score(self.items)

    def _priority(self, pos: int, item: Item) -> tuple[int, float, int]:
        scores = self.model_scores.get(item.id)
        ref = consensus(self.store.rankings.get(item.id, {})) or (list(item.reference) if item.reference else None)
        if scores is not None and ref is not None and len(ref) == len(scores):
            t = tau_b(scores, ref)
            if not math.isnan(t):
                return (0, t, pos)
        return (1, 0.0, pos)

    def ordered(self) -> list[Item]:
        """All items in the order they are offered (file order, or the model's disagreement first)."""
        if self.scorer is None:
            return self.items
        key = (self.store.version, len(self.model_scores))
        if self._order is None or self._order[0] != key:
            ranked = sorted(enumerate(self.items), key=lambda p: self._priority(*p))
            self._order = (key, [it for _, it in ranked])
        return self._order[1]

    # --- what an annotator sees ------------------------------------------------------------
    def queue(self, annotator: str) -> list[Item]:
        self.store.refresh()
        done = self.store.done_by(annotator)
        skipped = {it: rec for (it, who), rec in self.store.skipped.items() if who == annotator and it not in done}
        full = set()
        if self.per_item:
            full = {it for it, by in self.store.rankings.items() if len(by) >= self.per_item and annotator not in by}
        first = [it for it in self.ordered() if it.id not in done and it.id not in skipped and it.id not in full]
        later = sorted(skipped, key=lambda it: str(skipped[it].get("time")))
        return first + [self.by_id[i] for i in later if i in self.by_id and i not in full]

    def display_order(self, item: Item, annotator: str, k: int) -> list[int]:
        """Answer indices top to bottom as first shown: shuffled per (item, annotator), so neither the
        file's order nor the generator's anchors the person, and a reload shows the same order."""
        order = list(range(k))
        if self.shuffle:
            random.Random(f"{item.id}:{annotator}").shuffle(order)
        return order

    def progress(self, annotator: str) -> dict[str, int]:
        self.store.refresh()
        ids = set(self.by_id)
        mine = self.store.done_by(annotator) & ids
        skipped = {it for it, who in self.store.skipped if who == annotator} & ids
        people = {who for by in self.store.rankings.values() for who in by}
        rankings = sum(len(by) for it, by in self.store.rankings.items() if it in ids)
        return {
            "total": len(ids),
            "done": len(mine),
            "skipped": len(skipped - mine),
            "rankings": rankings,
            "annotators": len(people),
        }

    # --- actions ---------------------------------------------------------------------------
    def save(
        self,
        item: Item,
        order: Sequence[int],
        tied: Sequence[bool],
        annotator: str,
        seconds: float | None,
        flagged: bool = False,
        note: str = "",
    ) -> tuple[bool, float | None]:
        """Append the ranking; (False, None) if this annotator had ranked the item already.
        The float is the reward model's tau-b with this ranking (None without a model)."""
        answers = self.answers(item)
        tiers = tiers_from(order, tied, len(answers))
        rec = ranking_record(item, answers, tiers, annotator, seconds, flagged, note)
        if not self.store.add_ranking(rec):
            return False, None
        model = self.model_scores.get(item.id)
        if model is None:
            return True, None
        mine = [0.0] * len(answers)
        for i, s in zip(rec["annotation"]["index"], rec["scores"]):
            mine[i] = float(s)
        return True, tau_b(model, mine)

    def skip(self, item: Item, annotator: str, flagged: bool = False, note: str = "") -> None:
        rec = {"item": item.id, "annotator": annotator, "time": now_iso(), "flagged": bool(flagged)}
        self.store.add_skip({**rec, "note": str(note)[:NOTE_MAX]})

    def _cached(self, name: str, compute: Any) -> list[dict[str, Any]]:
        """Tables recomputed only when a ranking or a model score arrived (every page view asks)."""
        self.store.refresh()
        key = (name, self.store.version, len(self.model_scores))
        with self._lock:
            if key not in self._tables:
                self._tables = {k: v for k, v in self._tables.items() if k[0] != name}
                self._tables[key] = compute()
            return self._tables[key]

    def agreement(self) -> list[dict[str, Any]]:
        return self._cached("people", lambda: annotator_agreement(self.store.rankings))

    def model_rows(self) -> list[dict[str, Any]]:
        if self.scorer is None:
            return []
        return self._cached("model", lambda: model_agreement(self.store.rankings, self.model_scores))
