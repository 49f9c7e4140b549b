"""The ASAP star reader: graded lists of one aspect, distinct stars first, ties kept, nothing lost uncounted."""

from __future__ import annotations

import csv
import random
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import write_asap

from rankrm.data.asap import ASPECTS, FILES, deal, load_asap, read_reviews
from rankrm.data.sources import read_source, resolve
from rankrm.data.validate import DropLog
from rankrm.errors import DataError, RankrmError


@pytest.fixture
def asap(tmp_path: Path) -> Path:
    return write_asap(tmp_path / "asap", n=40)


def mentions(folder: Path, split: str, aspects: list[str]) -> dict[str, list[tuple[str, float]]]:
    """aspect -> [(review, star)] read with the csv module directly (the reference)."""
    with (folder / FILES[split]).open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {a: [(r["reviewbody"].strip(), float(r["star"])) for r in rows if r[a] != "-2"] for a in aspects}


@pytest.mark.parametrize("ties", [True, False])
@pytest.mark.parametrize("k", [2, 3, 4, 5])
def test_lists_hold_each_mention_once_best_first(asap: Path, k: int, ties: bool) -> None:
    aspects = ["dish_taste", "price_level", "service_wait_time"]
    splits, info = load_asap(DropLog(), 3, str(asap), k=k, ties=ties, aspects=aspects)
    for split in ("train", "val", "test"):
        ref = mentions(asap, split, aspects)
        by_aspect: dict[str, Counter] = {a: Counter() for a in aspects}
        for rl in splits[split]:
            assert rl.k == k and list(rl.labels) == sorted(rl.labels, reverse=True) and rl.prompt is None
            aspect = rl.source.split(":")[1].split("#")[0]
            by_aspect[aspect].update(zip(rl.responses, rl.labels))
            if not ties:
                assert len(set(rl.labels)) == k
        dealt = sum(sum(c.values()) for c in by_aspect.values())
        assert dealt + info["mentions_unused"][split] == sum(len(v) for v in ref.values())
        for a in aspects:  # every dealt review really mentions the aspect, with its own star, at most once
            assert not by_aspect[a] - Counter(ref[a]) and max(by_aspect[a].values(), default=1) == 1
        assert info["lists_with_ties"][split] == sum(len(set(rl.labels)) < k for rl in splits[split])
    assert info["reviews"] == {"train": 40, "val": 40, "test": 40}


def test_dealing_puts_distinct_stars_first_then_ties() -> None:
    """Against a brute-force count: a list has distinct stars exactly while k star levels remain."""
    from rankrm.data.asap import Review

    rng = random.Random(0)
    for _ in range(200):
        stars = [rng.choice([1.0, 3.0, 4.0, 5.0, 5.0]) for _ in range(rng.randint(0, 14))]
        reviews = [Review(f"r{i}", s, frozenset(), f"f:{i}") for i, s in enumerate(stars)]
        k = rng.randint(2, 4)
        lists, unused = deal(reviews, k, True, random.Random(1))
        left = Counter(stars)
        for members in lists:
            distinct_possible = sum(1 for v in left.values() if v) >= k
            assert (len({r.star for r in members}) == k) == distinct_possible
            left.subtract(r.star for r in members)
        assert unused == sum(left.values()) < k
        strict, unused_strict = deal(reviews, k, False, random.Random(1))
        assert all(len({r.star for r in m}) == k for m in strict) and unused_strict + k * len(strict) == len(stars)
        assert [[r.text for r in m] for m in strict] == [[r.text for r in m] for m in lists[: len(strict)]]


def test_same_seed_same_lists_other_seed_other_lists(asap: Path) -> None:
    a, _ = load_asap(DropLog(), 0, str(asap))
    b, _ = load_asap(DropLog(), 0, str(asap))
    c, _ = load_asap(DropLog(), 1, str(asap))
    assert a == b and a != c


def test_through_the_source_config_and_all_tied_lists_are_counted(asap: Path) -> None:
    source = {"reader": "asap", "data_dir": str(asap), "k": 4, "ties": True, "aspects": None}
    data = read_source(source, seed=0)
    assert set(data.splits) == {"train", "val", "test"} and data.info["reviews"]["val"] == 40
    assert len(data.splits["train"]) > 0
    assert resolve(source).content() == [str(asap / name) for name in FILES.values()]  # what the token cache hashes
    with pytest.raises(RankrmError, match=r"unknown option\(s\) \['kk'\]"):
        read_source({**source, "kk": 3}, seed=0)


def test_token_cache_path_reads_the_dealt_splits(asap: Path, tmp_path: Path) -> None:
    """Through the data module (token cache on): the three dealt splits, none carved (asap has no fractions)."""
    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.data.datamodule import RankDataModule

    _, tok = build_reward_model(load_option("backbone", "tiny_bert"))
    source = {"reader": "asap", "data_dir": str(asap), "aspects": ["dish_taste"]}
    dm = RankDataModule(tok, source, seed=0, cache_dir=str(tmp_path / "cache"))
    dm.setup("fit")
    splits, _ = load_asap(DropLog(), 0, str(asap), aspects=["dish_taste"])
    for split, lists in splits.items():  # every dealt list read into its own split; all-tied ones counted out
        assert dm.stats[split]["lists_read"] == len(lists) and dm.stats["source"]["reviews"][split] == 40
        assert dm.stats[split]["tied_dropped"] == sum(len(set(rl.labels)) == 1 for rl in lists)


def test_data_dir_defaults_to_its_folder_under_the_data_root(asap: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANKRM_DATA_DIR", str(asap.parent))
    asap.rename(asap.parent / "asap-zh-review-stars-sample")
    _, info = load_asap(DropLog(), 0)
    assert info["data_dir"] == str(asap.parent / "asap-zh-review-stars-sample")


def test_bad_files_are_user_errors(asap: Path, tmp_path: Path) -> None:
    train = asap / FILES["train"]
    with train.open(encoding="utf-8-sig", newline="") as fh:
        rows = list(csv.reader(fh))
    rows[3][2], rows[5][2] = "6.0", "six"  # two reviews' stars (column 'star')
    with train.open("w", encoding="utf-8-sig", newline="") as fh:
        csv.writer(fh).writerows(rows)
    with pytest.raises(DataError, match=r"train_sample\.csv:\d+: field 'star' must be an integer in \[1, 5\]"):
        load_asap(DropLog(), 0, str(asap))
    log = DropLog(skip_invalid=True)
    assert len(read_reviews(train, ASPECTS, log)) == 38 and log.counts["bad_score"] == 2
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(RankrmError, match="not an ASAP file, missing column"):
        read_reviews(tmp_path / "other.csv", ASPECTS, DropLog())
