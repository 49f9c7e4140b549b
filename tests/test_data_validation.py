"""Every malformed record is a DataError naming file, line and field; skip_invalid counts them."""

from __future__ import annotations

from pathlib import Path

import pytest
from data_fixtures import write_jsonl

from rankrm.data.readers import read_jsonl, read_oasst, read_seed_tsv, read_trl_pairs
from rankrm.data.validate import DropLog, all_tied
from rankrm.errors import DataError, RankrmError

GOOD = {"prompt": "p", "responses": ["a", "b", "c"]}

# (bad JSONL line, reason, field named in the message, words the message must contain). The one place these
# cases are checked; tests/test_reliability_input.py checks that such an error ends the CLI in its one line.
CASES = [
    ({"responses": ["only one"]}, "k<2", "responses", "at least 2"),
    ({"responses": []}, "k<2", "responses", "at least 2"),
    ({"responses": ["fine", "   "]}, "empty_response", "responses[1]", "empty"),
    ({"responses": ["same", "other", "same"]}, "duplicate_text", "responses[2]", "different rank"),
    ('{"responses": ["a", "b"], "scores": [1.0, NaN]}', "bad_score", "scores[1]", "finite"),
    ('{"responses": ["a", "b"], "scores": [Infinity, 0]}', "bad_score", "scores[0]", "finite"),
    ('{"responses": ["a", "b"], "scores": [-Infinity, 0]}', "bad_score", "scores[0]", "finite"),
    ({"responses": ["a", "b"], "scores": [1, "high"]}, "bad_score", "scores[1]", "number"),
    ({"responses": ["a", "b"], "scores": [1, "2"]}, "bad_score", "scores[1]", "number"),
    ({"responses": ["a", "b"], "scores": [True, False]}, "bad_score", "scores[0]", "number"),
    ({"responses": ["a", "b", "c"], "scores": [1, 2]}, "length_mismatch", "scores", "2 values for 3"),
    ('{"responses": ["a", "b"', "invalid_json", None, "invalid JSON"),
    ({"prompt": "p"}, "missing_field", "responses", "missing"),
    ({"responses": "a b"}, "wrong_type", "responses", "must be a list"),
    ({"responses": ["a", 3]}, "wrong_type", "responses[1]", "must be a string"),
    ({"responses": ["a", "b"], "prompt": 7}, "wrong_type", "prompt", "string or a message list"),
    ({"responses": ["a", "b"], "prompt": [{"role": "user"}]}, "wrong_type", "prompt[0]", "role"),
    ('["a", "b"]', "wrong_type", None, "JSON object"),
]


@pytest.mark.parametrize("bad,reason,field,words", CASES, ids=[c[1] + str(i) for i, c in enumerate(CASES)])
def test_each_jsonl_error_names_file_line_field(tmp_path: Path, bad, reason, field, words) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [GOOD, GOOD | {"prompt": "q"}, bad])
    with pytest.raises(DataError) as ei:
        read_jsonl(path, DropLog())
    err = ei.value
    assert (err.path, err.line, err.field, err.reason) == (str(path), 3, field, reason)
    msg = str(err)
    assert msg.startswith(f"{path}:3:") and words in msg
    if field:
        assert f"field '{field}'" in msg


def test_undecodable_bytes_report_the_line(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"responses": ["a", "b"]}\n{"responses": ["\xff\xfe", "b"]}\n')
    with pytest.raises(DataError, match=r"d\.jsonl:2: .*not valid UTF-8"):
        read_jsonl(path, DropLog())
    log = DropLog(skip_invalid=True)
    assert len(read_jsonl(path, log).lists) == 1 and log.as_dict() == {"decode_error": 1}


def test_missing_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(RankrmError, match="not found: .*nope.jsonl"):
        read_jsonl(tmp_path / "nope.jsonl", DropLog())
    for content in ("", "\n  \n"):
        (tmp_path / "e.tsv").write_text(content)
        with pytest.raises(DataError, match=r"e\.tsv: file is empty"):
            read_seed_tsv(tmp_path / "e.tsv", DropLog(skip_invalid=True))  # not skippable: nothing to train on


def test_skip_invalid_drops_and_counts_by_reason(tmp_path: Path) -> None:
    rows = [GOOD] + [c[0] for c in CASES] + [GOOD | {"prompt": "z"}]
    log = DropLog(skip_invalid=True)
    items = read_jsonl(write_jsonl(tmp_path / "d.jsonl", rows), log)
    assert len(items.lists) == 2
    expected: dict[str, int] = {}
    for c in CASES:
        expected[c[1]] = expected.get(c[1], 0) + 1
    assert log.as_dict() == dict(sorted(expected.items()))
    assert len(log.examples) == 3 and "d.jsonl:2:" in log.examples[0]


def test_same_text_with_same_score_is_allowed_and_ties_are_kept(tmp_path: Path) -> None:
    rows = [{"responses": ["a", "a", "b"], "scores": [1, 1, 0]}, {"responses": ["x", "y"], "scores": [2.0, 2.0]}]
    lists = read_jsonl(write_jsonl(tmp_path / "d.jsonl", rows), DropLog()).lists
    assert lists[0].labels == (1.0, 1.0, 0.0) and not all_tied(lists[0])
    assert all_tied(lists[1]) and lists[1].n_pairs == 0


def test_tsv_errors_name_the_column(tmp_path: Path) -> None:
    path = tmp_path / "d.tsv"
    path.write_text("a\tb\tc\nd\t\tf\ng\n", encoding="utf-8")
    with pytest.raises(DataError) as ei:
        read_seed_tsv(path, DropLog())
    assert (ei.value.line, ei.value.field) == (2, "column 2")
    log = DropLog(skip_invalid=True)
    assert len(read_seed_tsv(path, log).lists) == 1
    assert log.as_dict() == {"empty_response": 1, "k<2": 1}


def test_trl_pair_errors(tmp_path: Path) -> None:
    rows = [
        {"chosen": "good", "rejected": "good"},
        {"chosen": "x"},
        {
            "chosen": [
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": "a"},
                {"role": "assistant", "content": "b"},
            ],
            "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "c"}],
        },
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    log = DropLog(skip_invalid=True)
    assert read_trl_pairs(path, log).lists == []
    assert log.as_dict() == {"duplicate_text": 1, "missing_field": 1, "wrong_type": 1}
    with pytest.raises(DataError, match=r"p\.jsonl:1: field 'rejected' is identical to chosen"):
        read_trl_pairs(path, DropLog())
    with pytest.raises(DataError, match=r"q\.jsonl:1: field 'rejected' is missing"):
        read_trl_pairs(write_jsonl(tmp_path / "q.jsonl", rows[1:]), DropLog())


def test_oasst_bad_group_drops_only_that_group(tmp_path: Path) -> None:
    tree = {
        "message_tree_id": "t",
        "prompt": {
            "text": "q",
            "role": "prompter",
            "replies": [
                {
                    "text": "a",
                    "role": "assistant",
                    "rank": 0,
                    "replies": [
                        {
                            "text": "q2",
                            "role": "prompter",
                            "replies": [
                                {"text": "x", "role": "assistant", "rank": 0},
                                {"text": "y", "role": "assistant", "rank": 1},
                            ],
                        }
                    ],
                },
                {"text": " ", "role": "assistant", "rank": 1},
            ],
        },
    }
    path = write_jsonl(tmp_path / "t.jsonl", [tree])
    with pytest.raises(DataError, match=r"t\.jsonl:1: field 'prompt\.replies\[1\]\.text' is empty"):
        read_oasst(path, DropLog())
    log = DropLog(skip_invalid=True)
    items = read_oasst(path, log)
    assert [rl.responses for rl in items.lists] == [("x", "y")] and log.as_dict() == {"empty_response": 1}
