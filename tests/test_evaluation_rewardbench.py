"""RewardBench v1 / v2 scoring rules on hand-built rows with hand-computed answers, and their readers."""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest

from rankrm.errors import DataError
from rankrm.evaluation import rewardbench as rb
from rankrm.evaluation.results import compute_results


def _record(subset: str, rewards: list[float], n_correct: int = 1, kind: str = "rewardbench", rid: object = 0) -> dict:
    labels = [1.0] * n_correct + [0.0] * (len(rewards) - n_correct)
    return {
        "spec": kind,
        "kind": kind,
        "role": "eval",
        "split": "all",
        "index": 0,
        "id": rid,
        "group": subset,
        "subset": subset,
        "labels": labels,
        "rewards": rewards,
        "lengths": [10 + i for i in range(len(rewards))],
    }


V1_ROWS = [  # (subset, chosen reward, rejected reward)
    ("alpacaeval-easy", 2, 1),  # right
    ("alpacaeval-easy", 1, 1),  # a tie is wrong
    ("alpacaeval-hard", 0, -1),  # right
    ("mt-bench-hard", 1, 2),  # wrong
    ("llmbar-natural", 3, 1),
    ("llmbar-natural", 1, 0),
    ("llmbar-natural", 0, 5),
    ("llmbar-natural", 5, 5),
    ("math-prm", 1, 0),
    ("hep-cpp", 0, 1),
    ("hep-cpp", 2, 1),
]


def test_v1_strict_subsets_sections_weighted_by_example_counts_and_score() -> None:
    recs = [_record(s, [c, r]) for s, c, r in V1_ROWS]
    out = compute_results(recs, {"bootstrap": 20})["rewardbench"]["rewardbench"]
    assert out["subsets"] == {
        "alpacaeval-easy": 0.5,
        "alpacaeval-hard": 1.0,
        "mt-bench-hard": 0.0,
        "llmbar-natural": 0.5,
        "math-prm": 1.0,
        "hep-cpp": 0.5,
    }
    chat = (0.5 * 100 + 1.0 * 95) / (100 + 95)
    chat_hard = (0.0 * 37 + 0.5 * 100) / (37 + 100)
    reasoning = (1.0 * 984 + 0.5 * 164) / (984 + 164)  # math-prm weighs 984, not its 447 rows
    assert out["sections"] == pytest.approx({"Chat": chat, "Chat Hard": chat_hard, "Reasoning": reasoning})
    assert out["sections_missing"] == ["Safety"]
    assert out["score"] == pytest.approx((chat + chat_hard + reasoning) / 3)


def test_v1_full_leaderboard_score_is_the_mean_of_four_sections() -> None:
    acc = {s: (i % 5) / 4 for i, s in enumerate(rb.EXAMPLE_COUNTS)}
    out = rb.sections_v1(acc)
    expect = {
        sec: sum(acc[s] * rb.EXAMPLE_COUNTS[s] for s in subs) / sum(rb.EXAMPLE_COUNTS[s] for s in subs)
        for sec, subs in rb.SUBSET_MAPPING.items()
    }
    assert out["sections"] == pytest.approx(expect)
    assert out["score"] == pytest.approx(sum(expect.values()) / 4)


@pytest.mark.parametrize(
    "rewards,credit",
    [([3, 1, 2, 0], 1.0), ([3, 3, 1, 0], 0.5), ([3, 3, 3, 0], 1 / 3), ([2, 2, 2, 2], 0.25), ([1, 3, 0, 0], 0.0)],
)
def test_v2_best_of_4_credit_is_one_over_the_number_tied_at_the_top(rewards: list[float], credit: float) -> None:
    assert rb.v2_credit(rewards) == pytest.approx(credit)


# Ties: prompt 0 and 1 have a ref and a tied row, prompt 2 only a ref row.
TIES_ROWS = [
    ("ref", 0, [5, 1, 2, 0], 1),  # accurate, margin 5 - 2 = 3
    ("tied", 0, [4, 3, 3.5, 1, 0.5], 3),  # accurate, spread 4 - 3 = 1, margin 3 - 1 = 2
    ("ref", 1, [1, 2, 0], 1),  # margin 1 - 2 = -1
    ("tied", 1, [2, 0, 1], 2),  # spread 2, margin 0 - 1 = -1
    ("ref", 2, [3, 1], 1),  # accurate
]
# tied acc 1/2, ref acc 2/3; over prompts 0, 1: margin > spread 1/2, min(ref, tied) margin > spread 1/2,
# tanh(min margin / spread - 1): tanh(2 / 1 - 1), tanh(-1 / 2 - 1)
TIES_SCORE = 0.3 * 0.5 + 0.3 * 2 / 3 + 0.2 * 0.5 + 0.2 * 0.5 + 0.01 * (math.tanh(1.0) + math.tanh(-1.5)) / 2


def test_ties_composite_score_by_hand() -> None:
    assert rb.ties_score(TIES_ROWS, [1] * len(TIES_ROWS)) == pytest.approx(TIES_SCORE)


def test_ties_weights_count_a_prompt_as_if_it_were_repeated() -> None:
    copies = [(k, pid + 100, r, n) for k, pid, r, n in TIES_ROWS if pid == 0]
    assert rb.ties_score(TIES_ROWS, [2, 2, 1, 1, 1]) == pytest.approx(rb.ties_score(TIES_ROWS + copies, [1] * 7))
    assert rb.ties_score(TIES_ROWS, [0, 0, 1, 1, 1]) == pytest.approx(rb.ties_score(TIES_ROWS[2:], [1] * 3))


def test_ties_zero_spread_and_no_shared_prompt() -> None:
    rows = [("ref", 0, [2, 1], 1), ("tied", 0, [3, 3, 1], 2)]  # spread 0: tanh(+inf) = 1, margin 2 > 0
    assert rb.ties_score(rows, [1, 1]) == pytest.approx(0.3 + 0.3 + 0.2 + 0.2 + 0.01)
    assert math.isnan(rb.ties_score([("ref", 0, [2, 1], 1)], [1]))  # RewardBench's mean of nothing


def test_v2_subsets_ties_and_score_through_compute_results() -> None:
    recs = [
        _record("Factuality", [3, 1, 2, 0], kind="rewardbench2"),
        _record("Factuality", [3, 3, 1, 0], kind="rewardbench2"),
        _record("Math", [1, 3, 0, 0], kind="rewardbench2"),
    ]
    recs += [_record("Ties", r, n, "rewardbench2", f"{k}:{pid}") for k, pid, r, n in TIES_ROWS]
    out = compute_results(recs, {"bootstrap": 20})["rewardbench2"]["rewardbench"]
    assert out["subsets"] == pytest.approx({"Factuality": 0.75, "Math": 0.0, "Ties": TIES_SCORE})
    assert out["score"] == pytest.approx((0.75 + 0.0 + TIES_SCORE) / 3)
    assert out["sections_missing"] == ["Precise IF", "Safety", "Focus"]


def test_bootstrap_of_a_subset_keeps_its_size_and_brackets_the_value() -> None:
    recs = [_record("hep-go", [1, 0] if i % 3 else [0, 1]) for i in range(30)]
    recs += [_record("donotanswer", [1, 0]) for _ in range(10)]
    out = compute_results(recs, {"bootstrap": 200})["rewardbench"]
    lo, hi = out["rewardbench"]["ci95"]["subsets"]["hep-go"]
    assert lo < 20 / 30 < hi
    assert out["rewardbench"]["ci95"]["subsets"]["donotanswer"] == [1.0, 1.0]  # all right in every resample


def _write(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_v1_reader_makes_chat_prompts_and_keeps_ids(tmp_path: Path) -> None:
    rows = [{"prompt": "hi?", "chosen": "hello", "rejected": "go away", "subset": "donotanswer", "id": 7}]
    ((rl, meta),) = list(rb.read("rewardbench", _write(tmp_path / "rb.jsonl", rows)))
    assert rl.responses == ("hello", "go away") and rl.labels == (1.0, 0.0)
    assert rl.prompt == [{"role": "user", "content": "hi?"}]
    assert meta == {"subset": "donotanswer", "id": 7}


def test_v2_reader_reads_parquet(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "p", "chosen": ["a"], "rejected": ["b", "c", "d"], "subset": "Focus", "id": "x1"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rb2.parquet")
    ((rl, meta),) = list(rb.read("rewardbench2", str(tmp_path / "rb2.parquet")))
    assert rl.responses == ("a", "b", "c", "d") and rl.labels == (1.0, 0.0, 0.0, 0.0)
    assert meta["subset"] == "Focus" and meta["num_correct"] == 1


@pytest.mark.parametrize(
    "kind,row,message",
    [
        ("rewardbench", {"prompt": "p", "chosen": "a", "subset": "hep-go"}, "field 'rejected' is missing"),
        (
            "rewardbench",
            {"prompt": "p", "chosen": "a", "rejected": "b", "subset": "chat"},
            "field 'subset' 'chat' is not",
        ),
        (
            "rewardbench2",
            {"prompt": "p", "chosen": "a", "rejected": ["b"], "subset": "Math"},
            "field 'chosen' must be a list",
        ),
        ("rewardbench2", {"prompt": "p", "chosen": ["a"], "rejected": ["b"], "subset": "Ties", "id": "7"}, "'ref:<n>'"),
        (
            "rewardbench2",
            {"prompt": "p", "chosen": ["a"], "rejected": ["b"], "subset": "Ties", "id": "tied:3"},
            "at least 2",
        ),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path: Path, kind: str, row: dict, message: str) -> None:
    good = {"prompt": "p", "chosen": "a", "rejected": "b", "subset": "hep-go"}
    if kind == "rewardbench2":
        good = {"prompt": "p", "chosen": ["a"], "rejected": ["b"], "subset": "Math"}
    path = _write(tmp_path / "rows.jsonl", [good, row])
    with pytest.raises(DataError) as err:
        list(rb.read(kind, path))
    assert f"{path}:2:" in str(err.value) and message in str(err.value)


# ---- random rows against brute-force loops written from RewardBench's source (files cited in rewardbench.py) --


def _brute_v1(rows: list[tuple[str, int, int]]) -> tuple[dict[str, float], dict[str, float]]:
    """run_rm.py's strict `chosen > rejected`, then calculate_scores_per_section's loop (absent sections skipped)."""
    right: dict[str, int] = defaultdict(int)
    n: dict[str, int] = defaultdict(int)
    for subset, chosen, rejected in rows:
        n[subset] += 1
        right[subset] += 1 if chosen > rejected else 0
    acc = {s: right[s] / n[s] for s in n}
    sections = {}
    for section, tests in rb.SUBSET_MAPPING.items():
        total_weighted_score = total_examples = 0
        for test in tests:
            if test in acc:
                total_weighted_score += acc[test] * rb.EXAMPLE_COUNTS[test]
                total_examples += rb.EXAMPLE_COUNTS[test]
        if total_examples > 0:
            sections[section] = total_weighted_score / total_examples
    return acc, sections


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v1_random_rows_match_a_brute_loop(seed: int) -> None:
    rng = random.Random(seed)
    subsets = rng.sample(sorted(rb.EXAMPLE_COUNTS), 12)
    rows = [(rng.choice(subsets), rng.randint(0, 3), rng.randint(0, 3)) for _ in range(300)]  # reward ties
    out = compute_results([_record(s, [c, r]) for s, c, r in rows], {"bootstrap": 10})["rewardbench"]["rewardbench"]
    acc, sections = _brute_v1(rows)
    assert out["subsets"] == pytest.approx(acc)
    assert out["sections"] == pytest.approx(sections)
    assert out["score"] == pytest.approx(sum(sections.values()) / len(sections))


def _brute_ties(rows: list[tuple[str, int, list[float], int]]) -> float:
    """process_single_model: group by (kind, prompt id), _compute_prompt_stats, the 0.3/0.3/0.2/0.2/0.01 sum."""
    grouped: dict[tuple[str, int], list[tuple[bool, float]]] = defaultdict(list)
    for kind, pid, scores, num_correct in rows:
        for i, s in enumerate(scores):
            grouped[(kind, pid)].append((i < num_correct, s))
    ref, tied = {}, {}
    for (kind, pid), samples in grouped.items():
        correct = [s for ok, s in samples if ok]
        wrong = [s for ok, s in samples if not ok]
        spread = max(correct) - min(correct) if len(correct) > 1 else None
        margin = min(correct) - max(wrong)
        (ref if kind == "ref" else tied)[pid] = (margin > 0, spread, margin)
    ref_acc = np.mean([s[0] for s in ref.values()]) if ref else 0.0
    tied_acc = np.mean([s[0] for s in tied.values()]) if tied else 0.0
    both = set(ref) & set(tied)
    spread = np.array([tied[p][1] for p in both], dtype=float)
    tied_m = np.array([tied[p][2] for p in both], dtype=float)
    ref_m = np.array([ref[p][2] for p in both], dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        margin_scores = np.nan_to_num(np.tanh(np.minimum(ref_m, tied_m) / spread - 1), nan=0.0)
    return float(
        0.30 * tied_acc
        + 0.30 * ref_acc
        + 0.20 * np.mean(tied_m > spread)
        + 0.20 * np.mean(np.minimum(ref_m, tied_m) > spread)
        + 0.01 * np.mean(margin_scores)
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_v2_random_rows_match_a_brute_loop(seed: int) -> None:
    rng = random.Random(seed)
    best_of_4 = [(rng.choice(rb.V2_SUBSETS[:5]), [float(rng.randint(0, 3)) for _ in range(4)]) for _ in range(200)]
    ties = []
    for pid in range(30):
        ties.append(("ref", pid, [float(rng.randint(0, 4)) for _ in range(4)], 1))
        if pid % 5:  # some prompts have no tied row: they count in ref accuracy only
            n_correct = rng.randint(2, 4)
            ties.append(("tied", pid, [float(rng.randint(0, 4)) for _ in range(n_correct + 2)], n_correct))
    recs = [_record(s, r, kind="rewardbench2") for s, r in best_of_4]
    recs += [_record("Ties", r, n, "rewardbench2", f"{k}:{pid}") for k, pid, r, n in ties]
    out = compute_results(recs, {"bootstrap": 10})["rewardbench2"]["rewardbench"]
    credit: dict[str, list[float]] = defaultdict(list)
    for subset, scores in best_of_4:  # reroll_and_score_dataset's credit, chosen first
        max_val = np.max(scores)
        credit[subset].append((1 / np.sum(np.array(scores) == max_val)) if scores[0] == max_val else 0)
    expect = {s: float(np.mean(c)) for s, c in credit.items()} | {"Ties": _brute_ties(ties)}
    assert out["subsets"] == pytest.approx(expect)
    assert out["score"] == pytest.approx(np.mean(list(expect.values())))
