"""The source and format registries: pinned output, any format over any source, containers, options, streaming."""

from __future__ import annotations

import ast
import hashlib
import itertools
import json
from collections import Counter
from pathlib import Path

import pytest
from data_fixtures import VADER_FILES, oasst_messages, oasst_tree, strict_rows, write_jsonl, write_vader

import rankrm
from rankrm.data import vader
from rankrm.data.formats import FORMATS, Parsing
from rankrm.data.readers import read_file
from rankrm.data.sources import SOURCES, resolve
from rankrm.data.validate import DropLog
from rankrm.errors import DataError, RankrmError


def load(source: dict, seed: int = 0, log: DropLog | None = None) -> tuple[dict, dict]:
    return resolve(source).read(log or DropLog(), seed)


def digest(splits: dict) -> str:
    """Every list of every split, in order, with its source as file name:line (no tmp dir in it)."""
    canon = {
        s: [[list(rl.responses), list(rl.labels), rl.prompt, Path(rl.source).name] for rl in lists]
        for s, lists in sorted(splits.items())
    }
    return hashlib.sha256(json.dumps(canon, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]


def _fixture_files(tmp: Path) -> dict[str, Path]:
    rows = strict_rows(40) + [{"prompt": "question number 3?", "responses": ["x", "y", "z"], "scores": [1, 2, 1]}]
    tsv = tmp / "s.tsv"
    tsv.write_text("".join(f'好{i}\t"中 ""{i}"""\t差{i}\n' for i in range(25)), encoding="utf-8")
    return {
        "jsonl": write_jsonl(tmp / "l.jsonl", rows + strict_rows(10, k=3, prompt=False)),
        "pairs": write_jsonl(
            tmp / "p.jsonl", [{"prompt": f"q{i % 7}", "chosen": f"good {i}", "rejected": f"bad {i}"} for i in range(30)]
        ),
        "trees": write_jsonl(tmp / "t.jsonl", [oasst_tree(f"T{i}") for i in range(15)]),
        "tsv": tsv,
    }


# Digests of the readers' output at c8417e6 (before the registries), on the same fixtures: the lists,
# their order and the splits must not change (the main job's metrics depend on them).
PINNED = {
    "vader_s0": "419a874e006c0eca",
    "vader_s1_k3": "08dac70914308d2d",
    "vader_holdout": "b6dec35300e45dc0",
    "jsonl_s0": "2fc912e35a31ec7a",
    "jsonl_s3": "00dd3b4d4b4b4443",
    "jsonl_files": "32aed8125eebf45a",
    "trl": "cce97926bfe6bad5",
    "oasst": "cb0ea75885e61631",
    "tsv": "7e74a8e2ff9e0033",
    "hf_list": "2fc912e35a31ec7a",
    "hf_pairs": "cce97926bfe6bad5",
}


def test_lists_and_splits_match_the_readers_before_the_registries(tmp_path: Path) -> None:
    v = write_vader(tmp_path / "v", n=120, domains=tuple(VADER_FILES))
    f = _fixture_files(tmp_path)
    sources = {
        "vader_s0": ({"reader": "vader", "data_dir": str(v)}, 0),
        "vader_s1_k3": ({"reader": "vader", "data_dir": str(v), "k": 3, "min_gap": 0.3}, 1),
        "vader_holdout": (
            {"reader": "vader", "data_dir": str(v), "holdout_domain": "tweets", "domains": ["movie", "amazon", "nyt"]},
            0,
        ),
        "jsonl_s0": ({"reader": "jsonl", "path": str(f["jsonl"])}, 0),
        "jsonl_s3": ({"reader": "jsonl", "path": str(f["jsonl"]), "fractions": [0.6, 0.2, 0.2]}, 3),
        "jsonl_files": ({"reader": "jsonl", "train": str(f["jsonl"]), "test": str(f["jsonl"])}, 0),
        "trl": ({"reader": "trl_pairs", "path": str(f["pairs"])}, 0),
        "oasst": ({"reader": "oasst", "path": str(f["trees"])}, 0),
        "tsv": ({"reader": "seed_tsv", "path": str(f["tsv"])}, 0),
        "hf_list": ({"reader": "hf", "path": str(f["jsonl"])}, 0),
        "hf_pairs": ({"reader": "hf", "path": str(f["pairs"]), "format": "pairs"}, 0),
    }
    got = {name: digest(load(src, seed)[0]) for name, (src, seed) in sources.items()}
    assert got == PINNED
    _, info = load(sources["vader_s0"][0])
    assert info["texts"] == {"val": 48, "test": 48, "train": 384} and info["texts_in_lists"]["train"] == 368


def _content(splits: dict) -> dict:
    return {s: [(rl.responses, rl.labels, rl.prompt) for rl in lists] for s, lists in splits.items()}


def test_oasst_flat_messages_from_a_datasets_folder_match_the_tree_file(tmp_path: Path) -> None:
    """`format=oasst` over the hub layout (one message a row, in a save_to_disk folder, as
    `OpenAssistant/oasst1` is) gives the lists of the nested tree export, split by the same trees."""
    import datasets

    trees = [oasst_tree(f"T{i}") for i in range(12)]
    nested, n_info = load({"reader": "oasst", "path": str(write_jsonl(tmp_path / "t.jsonl", trees))}, 5)
    rows = [m for t in trees for m in oasst_messages(t)]
    folder = tmp_path / "oasst1"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    flat, f_info = load({"reader": "hf", "path": str(folder), "format": "oasst"}, 5)
    assert _content(flat) == _content(nested) and f_info == n_info == {"carved": ["test", "val"], "unranked_groups": 12}
    deep = next(rl for rl in flat["train"] if len(rl.prompt) == 3)
    assert deep.source.startswith(f"{folder}[train]:")  # the row of the message whose replies these are
    shuffled = list(reversed(rows))  # children before parents, trees interleaved: still the same lists
    jsonl = write_jsonl(tmp_path / "msgs.jsonl", shuffled)
    again = read_file(jsonl, DropLog(), "oasst")
    assert sorted(map(str, (rl.responses for rl in again.lists))) == sorted(
        str(rl.responses) for s in nested.values() for rl in s
    )


def test_flat_oasst_errors_name_the_message_row(tmp_path: Path) -> None:
    rows = oasst_messages(oasst_tree("A"))
    rows[2] = {**rows[2], "rank": "first"}  # an assistant reply of the root group
    orphan = {**rows[1], "message_id": "lost", "parent_id": "nowhere"}
    path = write_jsonl(tmp_path / "m.jsonl", [*rows, orphan, rows[5]])  # and a message twice
    with pytest.raises(DataError, match=r"m\.jsonl:12: field 'message_id' repeats an earlier message's id"):
        read_file(path, DropLog(), "oasst")
    log = DropLog(skip_invalid=True)
    items = read_file(path, log, "oasst")  # the root group is dropped, the deeper one kept
    assert log.as_dict() == {"bad_score": 1, "duplicate_id": 1, "orphan_message": 1} and len(items.lists) == 1
    assert "m.jsonl:11: field 'parent_id' names no message of its tree ('nowhere')" in log.examples[1]
    assert "m.jsonl:3: field 'rank' must be a number" in log.examples[2]


def test_ultrafeedback_over_a_local_file_and_a_bad_option(tmp_path: Path) -> None:
    rows = [
        {"instruction": f"i{i}", "completions": [{"response": "r1", "helpful": 4}, {"response": "r2", "helpful": 2}]}
        for i in range(10)
    ]
    path = str(write_jsonl(tmp_path / "uf.jsonl", rows))
    splits, _ = load({"reader": "jsonl", "path": path, "format": "ultrafeedback", "score_field": "helpful"})
    assert sum(map(len, splits.values())) == 10 and splits["train"][0].labels == (4.0, 2.0)
    with pytest.raises(RankrmError, match=r"unknown option\(s\) \['score_field'\] for reader 'jsonl' \(format list\)"):
        resolve({"reader": "jsonl", "path": path, "score_field": "helpful"})
    resolve({"reader": "jsonl", "path": path, "score_field": None})  # a null option of another format: not a typo


def test_every_container_gives_the_same_lists(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": f"q{i}", "chosen": f'good, "{i}"\nok', "rejected": f"bad {i}"} for i in range(9)]
    jsonl = write_jsonl(tmp_path / "p.jsonl", rows)
    (tmp_path / "p.json").write_text(json.dumps(rows, indent=1), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    lines = ["prompt,chosen,rejected"] + [
        ",".join('"' + r[k].replace('"', '""') + '"' for k in ("prompt", "chosen", "rejected")) for r in rows
    ]
    (tmp_path / "p.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (tmp_path / "p.txt").write_text(jsonl.read_text(), encoding="utf-8")  # no suffix: the format's container
    want = [(rl.responses, rl.prompt) for rl in read_file(jsonl, DropLog(), "pairs").lists]
    for name in ("p.json", "p.parquet", "p.csv", "p.txt"):
        got = read_file(tmp_path / name, DropLog(), "pairs").lists
        assert [(rl.responses, rl.prompt) for rl in got] == want, name
    assert [rl.source.rsplit(":", 1)[1] for rl in read_file(tmp_path / "p.json", DropLog(), "pairs").lists][:2] == [
        "2",
        "7",
    ]  # a JSON array's records are named by the line they start on
    assert read_file(tmp_path / "p.csv", DropLog(), "pairs").lists[1].source.endswith("p.csv:4")


def test_container_errors_name_the_line(tmp_path: Path) -> None:
    arr = tmp_path / "a.json"
    arr.write_text('[\n {"responses": ["a", "b"]},\n 7,\n {"responses": ["c"]}\n]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.json:3: expected a JSON object"):
        read_file(arr, DropLog())
    log = DropLog(skip_invalid=True)
    assert len(read_file(arr, log).lists) == 1 and log.as_dict() == {"k<2": 1, "wrong_type": 1}
    arr.write_text('[{"responses": ["a", "b"]},\n {"responses": ["c", ]}]', encoding="utf-8")
    with pytest.raises(DataError, match=r"a\.json:2: invalid JSON"):
        read_file(arr, DropLog(skip_invalid=True))  # the rest of an array cannot be found again
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("prompt,chosen,rejected\np,a,b\np2,only two\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.csv:3: has 2 cells, header 3"):
        read_file(csv_path, DropLog(), "pairs")
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 but not parquet")
    with pytest.raises(RankrmError, match=r"bad\.parquet: not a readable parquet file"):
        read_file(tmp_path / "bad.parquet", DropLog())
    with pytest.raises(RankrmError, match=r"format=list reads object rows, but .*s\.tsv is read as tsv .*'csv'"):
        (tmp_path / "s.tsv").write_text("a\tb\n", encoding="utf-8")
        read_file(tmp_path / "s.tsv", DropLog(), "list")


@pytest.mark.parametrize(
    "source, words",
    [
        (
            {"reader": "csv"},
            "data.source.reader='csv' must be one of ['asap', 'file', 'hf', 'jsonl', 'oasst', 'seed_tsv'",
        ),
        ({"reader": "file", "path": "x", "format": "nectar"}, "data.source.format='nectar' must be one of ['list'"),
        ({"reader": "vader", "format": "list"}, "data.source.format='list': reader 'vader' builds its own lists"),
        ({"reader": "vader", "k": "six"}, "data.source.k='six' must be an integer"),
        ({"reader": "vader", "min_gap": "x"}, "data.source.min_gap='x' must be a number"),
        ({"reader": "jsonl", "path": 3}, "data.source.path=3 must be a string or null"),
        ({"reader": "jsonl", "path": "x", "fractions": "0.5"}, "data.source.fractions='0.5' must be a list of numbers"),
        (
            {"reader": "hf", "path": "x", "columns": {"prompt": 1}},
            "columns={'prompt': 1} must be a mapping of strings to strings",
        ),
        ({"reader": "jsonl", "path": "x", "pth": None}, "unknown option(s) ['pth'] for reader 'jsonl' (format list)"),
        ({"reader": "vader", "path": "x"}, "unknown option(s) ['path'] for reader 'vader' (valid: ['data_dir'"),
        ({"reader": "asap", "ties": "yes"}, "data.source.ties='yes' must be true or false"),
        (
            {"reader": "asap", "aspects": "dish_taste"},
            "data.source.aspects='dish_taste' must be a list of strings or null",
        ),
    ],
)
def test_bad_source_options_fail_in_one_line_before_reading(source: dict, words: str) -> None:
    with pytest.raises(RankrmError) as ei:
        resolve(source)
    assert words in str(ei.value) and "\n" not in str(ei.value)


def test_bad_values_checked_by_the_reader_name_the_option(tmp_path: Path) -> None:
    path = str(write_jsonl(tmp_path / "d.jsonl", strict_rows(5)))
    for source, words in [
        ({"reader": "file", "path": path, "container": "xml"}, "data.source.container='xml' must be one of ['csv'"),
        ({"reader": "file", "path": path, "fractions": [0.8, 0.2]}, "data.source.fractions must be 3 shares"),
        (
            {"reader": "vader", "domains": ["tweets", "reddit"]},
            "data.source.domains=['tweets', 'reddit'] must all be among",
        ),
        ({"reader": "vader", "k": 1}, "data.source.k=1 must be >= 2"),
        ({"reader": "asap", "k": 6}, "data.source.k=6 must be in 2..5"),
        ({"reader": "asap", "aspects": ["taste"]}, "data.source.aspects=['taste'] must be null or a non-empty list of"),
        ({"reader": "asap", "data_dir": str(tmp_path / "none")}, "none/train_sample.csv"),
        ({"reader": "hf", "path": path, "splits": {"val": "validation"}}, "data.source.splits={'val': 'validation'}"),
    ]:
        with pytest.raises(RankrmError, match=None) as ei:
            load(source)
        assert words in str(ei.value), (source, str(ei.value))


def test_parsers_stream_rows_one_at_a_time() -> None:
    """A parser yields each list as soon as its row is read (an endless row stream still gives the
    first lists), and with skip_invalid every bad row is counted exactly once."""

    def rows():
        for i in itertools.count():
            obj = {"responses": ["a", "b"]} if i % 3 else {"responses": ["only"]}
            yield "gen", i + 1, obj

    log, counts = DropLog(skip_invalid=True), Counter()
    got = list(itertools.islice(Parsing("list", FORMATS["list"]).stream(rows(), log, counts), 10))
    assert [rl.source for rl, _ in got][:3] == ["gen:2", "gen:3", "gen:5"] and log.as_dict() == {"k<2": 5}
    trees = (("t", i + 1, oasst_tree(f"T{i}")) for i in itertools.count())
    got = list(itertools.islice(FORMATS["oasst"].parse(trees, log, counts), 5))
    assert [g for _, g in got] == ["tree:T0", "tree:T0", "tree:T1", "tree:T1", "tree:T2"]


def test_streaming_records_and_group_keys_give_the_same_splits(tmp_path: Path) -> None:
    """What a streaming consumer (a token cache) does: rows per split -> (list, group) one at a time,
    then carve from the group keys alone; it gives the splits `read` gives. Missing inputs fail early."""
    from rankrm.data.splits import assign_groups, carved_shares

    path = str(write_jsonl(tmp_path / "a.jsonl", strict_rows(30) + strict_rows(9, prompt=False)))
    test = str(write_jsonl(tmp_path / "t.jsonl", strict_rows(4)))
    for source in ({"reader": "jsonl", "path": path}, {"reader": "file", "train": path, "test": test}):
        r = resolve(source)
        inputs = r.rows(DropLog())
        streamed = {s: list(r.parsing.stream(rows, DropLog(), Counter())) for s, rows in inputs.items() if rows}
        assign = assign_groups([g for _, g in streamed["train"]], carved_shares(inputs, r.options["fractions"]), 2)
        got = {s: [rl for rl, g in streamed["train"] if assign[g] == s] for s in ("train", "val", "test")}
        got.update({s: [rl for rl, _ in keyed] for s, keyed in streamed.items() if s != "train"})
        assert got == r.read(DropLog(), 2)[0]
    with pytest.raises(RankrmError, match="not found: .*nope.jsonl"):
        resolve({"reader": "jsonl", "train": path, "val": str(tmp_path / "nope.jsonl")}).rows(DropLog())


def test_vader_fetch_runs_in_the_source_prepare_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple] = []
    monkeypatch.setattr(vader, "locate", lambda d, names: calls.append((d, names)))
    resolve({"reader": "vader", "holdout_domain": "tweets", "domains": ["movie"]}).prepare()
    resolve({"reader": "jsonl", "path": "x.jsonl"}).prepare()  # nothing to fetch
    assert calls == [(None, ["movie", "tweets"])]
    assert SOURCES["vader"].prepare is vader.prepare


def test_no_import_cycle_in_the_package() -> None:
    root = Path(rankrm.__file__).parent
    graph: dict[str, set[str]] = {}
    for f in root.rglob("*.py"):
        mod = ".".join(("rankrm", *f.relative_to(root).with_suffix("").parts)).removesuffix(".__init__")
        deps = set()
        tree = ast.parse(f.read_text(encoding="utf-8"))
        # Imports under `if TYPE_CHECKING:` never run: type hints only, not a dependency at run time.
        typing_only = {
            id(n)
            for b in ast.walk(tree)
            if isinstance(b, ast.If) and isinstance(b.test, ast.Name) and b.test.id == "TYPE_CHECKING"
            for n in ast.walk(b)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("rankrm"):
                deps |= {f"{node.module}.{a.name}" for a in node.names} | {node.module}
            elif isinstance(node, ast.Import):
                deps |= {a.name for a in node.names if a.name.startswith("rankrm")}
        graph[mod] = deps
    graph = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}

    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph[start])
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo += graph[m]
        return seen

    cycles = sorted(m for m in graph if m in reach(m))
    assert not cycles, cycles


@pytest.mark.slow
def test_cli_trains_on_oasst_messages_from_a_datasets_folder(tmp_path: Path) -> None:
    """Through the real CLI: `data=hf data.source.format=oasst` over the hub layout; a bad format is one line."""
    import datasets
    from test_reliability_input import BASE, assert_one_clear_error, run_cli

    rows = [m for i in range(10) for m in oasst_messages(oasst_tree(f"T{i}"))]
    folder = tmp_path / "oasst1"
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(str(folder))
    args = [*BASE, "data=hf", f"data.source.path={folder}", "trainer.max_steps=1"]
    proc = run_cli(tmp_path, *args, "data.source.format=oasst")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads((tmp_path / "run" / "metrics.json").read_text())["data"]
    assert (stats["reader"], stats["format"], stats["source"]["unranked_groups"]) == ("hf", "oasst", 10)
    assert sum(stats[s]["lists_read"] for s in ("train", "val", "test")) == 20
    bad = run_cli(tmp_path, *args, "data.source.format=nectar")
    assert_one_clear_error(bad, "data.source.format='nectar' must be one of", "'oasst'", "'ultrafeedback'")
