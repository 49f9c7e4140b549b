"""ASAP (Bu et al., NAACL 2021; Dianping restaurant reviews, Apache-2.0): 1-5 star reviews as graded
lists that may hold ties.

Files, in `data_dir` (default: `asap-zh-review-stars-sample` under the data root, `rankrm.paths`): the
official sample `train_sample.csv`, `dev_sample.csv`, `test_sample.csv` (UTF-8 with a BOM; header
`index, reviewbody, star, <18 aspect columns>`; an aspect is 1 positive, 0 neutral, -1 negative, -2 not
mentioned). Each file is one split (train / val / test), so no review crosses splits.

There is no prompt and no product id, so lists are built here, from the reviews of one split that
mention one ASPECT (value != -2): they are shuffled (seeded) and dealt into lists of `k`, each list
taking one review from each of the `k` largest remaining star levels, so its stars are distinct while
`k` levels remain. After that, `ties=true` deals the rest from the largest levels: lists with tied
stars, kept as ties (label = star; pairwise losses skip tied pairs, tie-aware losses use them; a list
whose stars all tie is dropped later and counted as `tied_dropped`); `ties=false` leaves the rest
unused (counted in `mentions_unused`: review-aspect pairs left undealt). A review is in at most one
list per aspect, so it appears in as many lists as the listed `aspects` it mentions. Memory and time
grow linearly with reviews x aspects.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from rankrm.data.records import RankedList
from rankrm.data.validate import DropLog, RecordError, check_file
from rankrm.errors import RankrmError
from rankrm.paths import data_root

FOLDER = "asap-zh-review-stars-sample"  # data_dir's default, under the data root
FILES = {"train": "train_sample.csv", "val": "dev_sample.csv", "test": "test_sample.csv"}
ASPECTS = (
    "location_traffic",
    "location_distance_from_business_district",
    "location_easy_to_find",
    "service_wait_time",
    "service_waiters_attitude",
    "service_parking_convenience",
    "service_serving_speed",
    "price_level",
    "price_cost_effective",
    "price_discount",
    "environment_decoration",
    "environment_noise",
    "environment_space",
    "environment_cleaness",  # sic, the file's spelling
    "dish_portion",
    "dish_taste",
    "dish_look",
    "dish_recommendation",
)
NOT_MENTIONED = -2


@dataclass(frozen=True)
class Review:
    text: str
    star: float  # 1..5
    aspects: frozenset[str]  # the aspects it mentions
    source: str  # "file:line"


def _int_field(row: dict[str, str], field: str, path: Path, line: int, allowed: range) -> int:
    raw = (row.get(field) or "").strip()
    try:
        value: float | None = float(raw)  # the stars are written "5.0"
    except ValueError:
        value = None
    if value is None or not value.is_integer() or int(value) not in allowed:
        raise RecordError(
            "bad_score", path, line, field, f"must be an integer in [{allowed[0]}, {allowed[-1]}], got {raw!r}"
        )
    return int(value)


def read_reviews(path: Path, aspects: Sequence[str], log: DropLog) -> list[Review]:
    """The reviews of one ASAP CSV; a malformed row is reported (raised, or counted with skip_invalid)."""
    p = check_file(path)
    with p.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = [c for c in ("reviewbody", "star", *aspects) if c not in (reader.fieldnames or [])]
        if missing:
            raise RankrmError(f"{p}: not an ASAP file, missing column(s) {', '.join(missing)}")
        out = []
        for row in reader:
            line = reader.line_num  # the row's last physical line (reviews span lines)
            try:
                text = (row["reviewbody"] or "").strip()
                if not text:
                    raise RecordError("empty_response", p, line, "reviewbody", "is empty")
                star = _int_field(row, "star", p, line, range(1, 6))
                said = frozenset(a for a in aspects if _int_field(row, a, p, line, range(-2, 2)) != NOT_MENTIONED)
                out.append(Review(text, float(star), said, f"{p}:{line}"))
            except RecordError as e:
                log.report(e)
    return out


def deal(reviews: Sequence[Review], k: int, ties: bool, rng: random.Random) -> tuple[list[list[Review]], int]:
    """Lists of `k` (best first) from `reviews`, distinct stars first (see the module docstring); returns
    (lists, reviews left unused)."""
    levels: dict[float, list[Review]] = {}
    for r in reviews:
        levels.setdefault(r.star, []).append(r)
    for star in sorted(levels):
        rng.shuffle(levels[star])
    lists = []
    while True:
        left = {s: len(v) for s, v in levels.items() if v}
        if len(left) >= k:
            picks = sorted(left, key=lambda s: (-left[s], -s))[:k]  # the k largest levels
        elif ties and sum(left.values()) >= k:
            picks = []
            for _ in range(k):  # each pick from the level with most reviews still undealt
                s = max(left, key=lambda s: (left[s], s))
                picks.append(s)
                left[s] -= 1
        else:
            break
        dealt = [levels[s].pop() for s in picks]
        lists.append(sorted(dealt, key=lambda r: -r.star))  # best first; stable, so ties keep their dealt order
    return lists, sum(len(v) for v in levels.values())


def _root(data_dir: str | None) -> Path:
    return Path(data_dir).expanduser() if data_dir else data_root() / FOLDER


def files(data_dir: str | None, **_: object) -> list[str]:
    """The source's content hook (the token cache key hashes them): the three sample CSVs."""
    return [str(_root(data_dir) / name) for name in FILES.values()]


def load_asap(
    log: DropLog,
    seed: int,
    data_dir: str | None = None,  # folder of the three sample CSVs; null: <data root>/asap-zh-review-stars-sample
    k: int = 4,  # reviews per list, 2..5 (there are 5 star levels)
    ties: bool = True,  # deal the reviews left after the distinct-star lists into lists with tied stars
    aspects: Sequence[str] | None = None,  # aspect columns that each give their own lists; null: all 18
) -> tuple[dict[str, list[RankedList]], dict]:
    """Read the three files and build each split's lists. Returns (split -> lists, info for `stats`).

    The parameters after `seed` are the `asap` source's `data.source` options."""
    chosen = list(aspects) if aspects is not None else list(ASPECTS)
    bad = sorted(set(chosen) - set(ASPECTS))
    if not 2 <= k <= 5:
        raise RankrmError(f"data.source.k={k!r} must be in 2..5 (ASAP has 5 star levels)")
    if bad or not chosen:
        raise RankrmError(f"data.source.aspects={aspects!r} must be null or a non-empty list of {', '.join(ASPECTS)}")
    root = _root(data_dir)
    splits: dict[str, list[RankedList]] = {}
    info: dict = {"data_dir": str(root), "reviews": {}, "lists_with_ties": {}, "mentions_unused": {}}
    for split, name in FILES.items():
        reviews = read_reviews(root / name, chosen, log)
        rng = random.Random(f"{seed}:asap:{split}")  # str seeds hash stably
        lists, unused, n_ties = [], 0, 0
        for aspect in chosen:
            dealt, left = deal([r for r in reviews if aspect in r.aspects], k, ties, rng)
            unused += left
            for i, members in enumerate(dealt):
                labels = tuple(r.star for r in members)
                n_ties += len(set(labels)) < len(labels)
                source = f"{Path(name).name}:{aspect}#{i}"
                lists.append(RankedList(tuple(r.text for r in members), labels, None, source))
        splits[split] = lists
        info["reviews"][split] = len(reviews)
        info["lists_with_ties"][split] = n_ties
        info["mentions_unused"][split] = unused
    return splits, info
