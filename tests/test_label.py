"""rankrm.label without a browser: rankings -> list JSONL, agreement vs brute force, the shared store,
inputs, queues and the reward-model order."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import write_jsonl
from scipy.stats import kendalltau

from rankrm.data.readers import read_jsonl
from rankrm.data.validate import DropLog
from rankrm.errors import RankrmError
from rankrm.label.agreement import annotator_agreement, model_agreement, same_order, tau_b
from rankrm.label.items import Item, content_id, inside, read_lists, read_prompts
from rankrm.label.ranking import aligned, ranking_record, tiers_from
from rankrm.label.session import LabelSession
from rankrm.label.store import LabelStore, sidecar

ROOT = Path(__file__).resolve().parents[1]


def slow_tau_b(a: list[float], b: list[float]) -> float:
    """Kendall tau-b by counting pairs (ties on both sides), the textbook formula."""
    n0 = n1 = n2 = s = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        n0 += 1
        da, db = a[i] - a[j], b[i] - b[j]
        n1 += da == 0
        n2 += db == 0
        s += (da > 0) - (da < 0) if db > 0 else -((da > 0) - (da < 0)) if db < 0 else 0
    denom = math.sqrt((n0 - n1) * (n0 - n2))
    return s / denom if denom else math.nan


def dense_ranks(x: list[float]) -> list[int]:
    levels = sorted(set(x), reverse=True)
    return [levels.index(v) for v in x]


def random_scores(rng: random.Random, k: int) -> list[float]:
    return [float(rng.randint(0, max(1, k // 2))) for _ in range(k)]  # few levels: many ties


def item(i: int, k: int = 4, prompt: str | None = None) -> Item:
    answers = tuple(f"answer {j} to {i}" for j in range(k))
    return Item(f"l-{i:012d}", prompt or f"question {i}?", answers, None, f"test:{i}")


def rank(store: LabelStore, it: Item, who: str, scores: list[float]) -> dict:
    """Store a ranking that gives it.responses[i] the score scores[i]."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    tied = [p > 0 and scores[order[p]] == scores[order[p - 1]] for p in range(len(order))]
    rec = ranking_record(it, it.responses, tiers_from(order, tied, len(order)), who, 3.0)
    assert store.add_ranking(rec)
    return rec


def test_tiers_scores_and_the_list_reader(tmp_path: Path) -> None:
    it = item(1, k=5)
    # top to bottom: 3, 0 (tied with 3), 4, 1, 2 (tied with 1)
    tiers = tiers_from([3, 0, 4, 1, 2], [False, True, False, False, True], 5)
    assert tiers == [[3, 0], [4], [1, 2]]
    rec = ranking_record(it, it.responses, tiers, "alice", 12.34, flagged=True, note="x" * 900)
    assert rec["scores"] == [2, 2, 1, 0, 0] and rec["annotation"]["index"] == [3, 0, 4, 1, 2]
    assert rec["annotation"]["seconds"] == 12.3 and len(rec["annotation"]["note"]) == 500
    answers, scores = aligned(rec)
    assert answers == it.responses and scores == [2.0, 0.0, 0.0, 2.0, 1.0]
    store = LabelStore(tmp_path / "labels.jsonl")
    assert store.add_ranking(rec)
    (rl,) = read_jsonl(tmp_path / "labels.jsonl", DropLog()).lists  # the trainer's reader takes the line
    assert rl.prompt == it.prompt and list(rl.responses) == [it.responses[i] for i in [3, 0, 4, 1, 2]]
    assert list(rl.labels) == [2.0, 2.0, 1.0, 0.0, 0.0]
    for bad in ([0, 1, 2, 3], [0, 1, 2, 3, 3], [0, 1, 2, 3, 5]):
        with pytest.raises(RankrmError, match="order all 5"):
            tiers_from(bad, [False] * 5, 5)


def test_tau_b_and_exact_order_match_brute_force() -> None:
    rng = random.Random(0)
    for _ in range(400):
        k = rng.randint(2, 9)
        a, b = random_scores(rng, k), random_scores(rng, k)
        if rng.random() < 0.2:
            b = list(a)
        want = slow_tau_b(a, b)
        got = tau_b(a, b)
        assert (math.isnan(want) and math.isnan(got)) or got == pytest.approx(want, abs=1e-12)
        if not math.isnan(want):
            assert got == pytest.approx(kendalltau(a, b, variant="b").statistic, abs=1e-12)
        assert same_order(a, b) == (dense_ranks(a) == dense_ranks(b))


def test_annotator_agreement_table(tmp_path: Path) -> None:
    rng = random.Random(1)
    store = LabelStore(tmp_path / "labels.jsonl")
    views: dict[str, dict[int, list[float]]] = {"ann": {}, "bob": {}, "cy": {}}
    for i in range(12):
        it = item(i, k=rng.randint(2, 6))
        for who in views:
            if rng.random() < 0.7:
                views[who][i] = random_scores(rng, len(it.responses))
                rank(store, it, who, views[who][i])
    rows = {r["annotators"]: r for r in annotator_agreement(store.rankings)}
    pooled_taus, pooled_exact, pooled_n = [], 0, 0
    for a, b in itertools.combinations(sorted(views), 2):
        shared = sorted(set(views[a]) & set(views[b]))
        taus = [t for i in shared if not math.isnan(t := slow_tau_b(views[a][i], views[b][i]))]
        exact = sum(dense_ranks(views[a][i]) == dense_ranks(views[b][i]) for i in shared)
        row = rows[f"{a} / {b}"]
        assert row["lists"] == len(shared) and row["tau on"] == len(taus)
        assert row["tau-b"] == (round(sum(taus) / len(taus), 3) if taus else None)
        assert row["exact"] == round(exact / len(shared), 3)
        pooled_taus += taus
        pooled_exact += exact
        pooled_n += len(shared)
    assert rows["all pairs"]["lists"] == pooled_n
    assert rows["all pairs"]["tau-b"] == round(sum(pooled_taus) / len(pooled_taus), 3)
    assert rows["all pairs"]["exact"] == round(pooled_exact / pooled_n, 3)
    ks = {i: len(store.rankings[item(i).id][w]["responses"]) for i in range(12) for w in views if i in views[w]}
    model = {item(i).id: [rng.gauss(0, 1) for _ in range(k)] for i, k in ks.items()}
    assert model_agreement(store.rankings, {}) == []
    for row in model_agreement(store.rankings, model):
        who = row["annotators"].removeprefix("reward model / ")
        taus = [slow_tau_b(model[item(i).id], x) for i, x in views[who].items()]
        taus = [t for t in taus if not math.isnan(t)]
        assert row["lists"] == len(views[who]) and row["tau-b"] == round(sum(taus) / len(taus), 3)


WRITER = """
import sys
from pathlib import Path
from rankrm.label.items import Item
from rankrm.label.ranking import ranking_record, tiers_from
from rankrm.label.store import LabelStore
store, who, n = LabelStore(Path(sys.argv[1])), sys.argv[2], int(sys.argv[3])
for i in range(n):
    it = Item(f"l-{i:012d}", "q " * 400, tuple(f"{who} answer {j} " * 50 for j in range(4)), None, "w")
    store.add_ranking(ranking_record(it, it.responses, tiers_from([0, 1, 2, 3], [False] * 4, 4), who, 1.0))
"""


def test_processes_share_one_file_without_losing_or_doubling_a_line(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # Four processes at once: two annotators, and "dup" twice (the same person in two servers).
    whos = ["ann", "bob", "dup", "dup"]
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(out), w, "40"], env=env) for w in whos]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    lines = out.read_bytes().split(b"\n")
    assert lines[-1] == b"" and all(json.loads(x) for x in lines[:-1])  # whole lines only
    who = Counter(json.loads(x)["annotation"]["annotator"] for x in lines[:-1])
    assert who == {"ann": 40, "bob": 40, "dup": 40}
    assert len(read_jsonl(out, DropLog()).lists) == 120


def test_a_torn_last_line_is_moved_aside_before_anything_reads_or_appends(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    store = LabelStore(out)
    rank(store, item(0), "ann", [3, 2, 1, 0])
    whole = out.read_bytes()
    torn = b'{"prompt": "cut off by a cra'
    out.write_bytes(whole + torn)  # what a process killed mid-write (or a power loss) can leave
    store2 = LabelStore(out)  # a restart
    assert out.read_bytes() == whole
    assert Path(f"{out}.torn").read_bytes() == torn + b"\n"
    assert store2.counts["torn_bytes_moved"] == len(torn) and set(store2.rankings) == {item(0).id}
    out.write_bytes(whole + b'{"half')  # torn while a server runs: its next append repairs first
    rank(store2, item(1), "ann", [0, 1, 2, 3])
    assert len(read_jsonl(out, DropLog()).lists) == 2


def test_skips_answers_and_lines_from_elsewhere(tmp_path: Path) -> None:
    out = tmp_path / "labels.jsonl"
    write_jsonl(out, [{"responses": ["x", "y"]}, "not json"])  # a list added by hand, a broken line
    store = LabelStore(out)
    assert store.counts["lines_without_annotation"] == 1 and store.labels.bad_lines == 1
    assert store.add_answers("p-1", ("a", "b"), {"generator": "g"}) == ("a", "b")
    assert store.add_answers("p-1", ("c", "d"), {"generator": "g"}) == ("a", "b")  # the first stays
    assert LabelStore(out).answers == {"p-1": ("a", "b")}
    assert sidecar(out, "answers").name == "labels.answers.jsonl"


def test_inputs_ids_and_the_data_dir_guard(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "p.txt").write_text("first\n\nsecond <b>x</b>\nfirst\n", encoding="utf-8")
    counts: Counter[str] = Counter()
    items = read_prompts(data / "p.txt", counts)
    assert [it.prompt for it in items] == ["first", "second <b>x</b>"] and counts["repeated_prompts"] == 1
    assert items[0].id == content_id("p", "first") and items[0].responses is None
    write_jsonl(data / "p.jsonl", [{"prompt": [{"role": "user", "content": "hi"}]}, {"prompt": " "}])
    with pytest.raises(RankrmError, match=r"p.jsonl:2: field 'prompt'"):
        read_prompts(data / "p.jsonl", counts)
    rows = [
        {"prompt": "q", "responses": ["b", "a", "b"], "scores": [1, 0, 1]},  # "b" twice, same score
        {"prompt": "q", "responses": ["a", "b"]},  # the same answers in another order: one item
        {"prompt": "r", "responses": ["z", "z"], "scores": [2, 2]},  # one distinct answer: nothing to rank
    ]
    lists = read_lists(write_jsonl(data / "l.jsonl", rows), "jsonl", counts)
    assert len(lists) == 1 and lists[0].responses == ("b", "a") and lists[0].reference == (1.0, 0.0)
    assert counts["repeated_answers"] == 2 and counts["repeated_lists"] == 1 and counts["single_answer_lists"] == 1
    (data / "s.tsv").write_text("best\tmiddle\tworst\n", encoding="utf-8")  # the seed article's format
    (tsv,) = read_lists(data / "s.tsv", "seed_tsv", counts)
    assert tsv.prompt is None and tsv.responses == ("best", "middle", "worst") and tsv.reference == (2.0, 1.0, 0.0)
    assert inside(data / "p.txt", data, "prompts") == (data / "p.txt").resolve()
    (data / "link").symlink_to(tmp_path)
    for outside in (tmp_path / "x.txt", data / ".." / "x.txt", data / "link" / "x.txt"):
        with pytest.raises(RankrmError, match="outside paths.data_dir"):
            inside(outside, data, "prompts")


def test_queue_resume_skip_and_annotations_per_item(tmp_path: Path) -> None:
    items = [item(i) for i in range(5)]
    out = tmp_path / "labels.jsonl"
    s = LabelSession(items, LabelStore(out), k=4)
    assert [it.id for it in s.queue("ann")] == [it.id for it in items]
    s.save(items[0], [1, 0, 2, 3], [False, True, False, False], "ann", 2.0)
    s.skip(items[1], "ann", flagged=True, note="all four are wrong")
    assert s.save(items[0], [0, 1, 2, 3], [False] * 4, "ann", 1.0) == (False, None)  # a second tab
    s2 = LabelSession(items, LabelStore(out), k=4)  # a restart: the next unlabelled item comes first
    assert [it.id for it in s2.queue("ann")] == [items[i].id for i in (2, 3, 4, 1)]  # the skip comes back last
    assert s2.progress("ann") == {"total": 5, "done": 1, "skipped": 1, "rankings": 1, "annotators": 1}
    assert [it.id for it in s2.queue("bob")] == [it.id for it in items]
    s3 = LabelSession(items, LabelStore(out), k=4, per_item=1)
    assert items[0].id not in {it.id for it in s3.queue("bob")}
    order = s2.display_order(items[2], "ann", 4)
    assert sorted(order) == [0, 1, 2, 3] and order == s2.display_order(items[2], "ann", 4)
    assert LabelSession(items, s2.store, k=4, shuffle=False).display_order(items[2], "ann", 4) == [0, 1, 2, 3]
    skip = json.loads(sidecar(out, "skips").read_text().splitlines()[0])
    assert skip["flagged"] is True and skip["note"] == "all four are wrong"


def test_generated_answers_are_seeded_distinct_and_stored_for_everyone(tmp_path: Path) -> None:
    from omegaconf import OmegaConf

    from rankrm.config import load_option
    from rankrm.label.generate import Generator

    spec = OmegaConf.to_container(load_option("backbone", "tiny_qwen"))
    sampling = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "seed": 3, "max_rounds": 3}
    gen = Generator(spec, sampling)
    a = gen.answers("p-000000000001", "Write about the sea.", 3)
    assert len(a) == 3 and len(set(a)) == 3 and all(x.strip() for x in a)
    assert gen.answers("p-000000000001", "Write about the sea.", 3) == a  # same item, same seed: same answers
    assert gen.answers("p-000000000002", "Write about the sea.", 3) != a
    prompts = [Item(f"p-00000000000{i}", f"prompt {i}", None, None, f"p:{i}") for i in (1, 2)]
    out = tmp_path / "labels.jsonl"
    s = LabelSession(prompts, LabelStore(out), k=3, generator=gen)
    stored = s.answers(prompts[0])
    assert len(stored) == 3 and s.answers(prompts[0]) == stored
    s.prefetch("ann")  # the next item of ann's queue is generated in the background
    deadline = time.time() + 120
    while prompts[1].id not in s.store.answers and time.time() < deadline:
        time.sleep(0.1)
        s.store.refresh()
    assert len(s.store.answers[prompts[1].id]) == 3
    other = LabelSession([*prompts, Item("p-3", "p3", None, None, "p:3")], LabelStore(out), k=3)
    assert other.answers(prompts[0]) == stored  # another process without a generator: the stored answers
    with pytest.raises(RankrmError, match="no generator"):
        other.answers(other.items[2])
    with pytest.raises(RankrmError, match="unknown sampling field"):
        Generator(spec, {"temprature": 1.0})


def test_a_reward_model_puts_the_lists_it_disagrees_with_first(tmp_path: Path) -> None:
    import torch

    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.export import export_model
    from rankrm.label.session import Scorer

    model, tok = build_reward_model(load_option("backbone", "tiny_bert"))
    with torch.no_grad():  # a large random head: the answers get clearly different scores
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(0)))
    scorer = Scorer(str(export_model(model.eval(), tok, tmp_path / "model")))
    rng = random.Random(2)
    words = ["good", "bad", "fine", "awful", "great", "meh", "nice", "poor"]
    items = []
    for i in range(8):
        answers = tuple(" ".join(rng.sample(words, 3)) + f" {i}" for _ in range(4))
        ref = tuple(float(x) for x in rng.sample(range(4), 4))
        items.append(Item(f"l-{i:012d}", f"q{i}", answers, ref if i < 6 else None, f"t:{i}"))
    s = LabelSession(items, LabelStore(tmp_path / "labels.jsonl"), k=4, scorer=scorer)
    s.score_known()
    assert set(s.model_scores) == {it.id for it in items}
    taus = {it.id: slow_tau_b(s.model_scores[it.id], list(it.reference)) for it in items[:6]}
    want = sorted(items[:6], key=lambda it: taus[it.id]) + items[6:]  # no reference: file order, after
    assert [it.id for it in s.ordered()] == [it.id for it in want]
    # Once a person ranks an item, their ranking is its reference (not the file's labels).
    scores = [float(x) for x in reversed(list(items[0].reference))]
    rank(s.store, items[0], "ann", scores)
    assert [it.id for it in s.ordered()][:6] == [
        it.id
        for it in sorted(
            items[:6], key=lambda it: slow_tau_b(s.model_scores[it.id], scores) if it is items[0] else taus[it.id]
        )
    ]
    saved, tau = s.save(items[1], [0, 1, 2, 3], [False] * 4, "ann", 1.0)
    assert saved and tau == pytest.approx(slow_tau_b(s.model_scores[items[1].id], [3.0, 2.0, 1.0, 0.0]))
    (row,) = s.model_rows()
    assert row["annotators"] == "reward model / ann" and row["lists"] == 2
