"""Readers on tiny files in the real formats: seed TSV, list JSONL, TRL pairs, OASST trees, HF, VADER."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from itertools import combinations
from pathlib import Path

import pytest
from data_fixtures import VADER_FILES, oasst_tree, strict_rows, write_jsonl, write_vader

from rankrm.data import vader
from rankrm.data.readers import read_jsonl, read_oasst, read_seed_tsv, read_trl_pairs
from rankrm.data.sources import resolve
from rankrm.data.validate import DropLog
from rankrm.errors import DataError, RankrmError


def load_source(source: dict, seed: int, log: DropLog) -> tuple[dict, dict]:
    return resolve(source).read(log, seed)


def load_hf(log: DropLog, seed: int, **options) -> tuple[dict, dict]:
    return load_source({"reader": "hf", **options}, seed, log)


def test_seed_tsv_unquotes_and_labels_best_first(tmp_path: Path) -> None:
    path = tmp_path / "dev.tsv"
    path.write_bytes('好\t"他说""不错"""\t一般\t"a, b"\r\n\nx\ty\n'.encode())
    lists = read_seed_tsv(path, DropLog()).lists
    assert lists[0].responses == ("好", '他说"不错"', "一般", "a, b")
    assert lists[0].labels == (3.0, 2.0, 1.0, 0.0) and lists[0].prompt is None
    assert lists[1].responses == ("x", "y") and lists[1].source == f"{path}:3"


def test_jsonl_scores_ties_and_chat_prompt(tmp_path: Path) -> None:
    chat = [{"role": "user", "content": "hi"}]
    rows = [{"prompt": chat, "responses": ["a", "b", "c"], "scores": [2, 5, 2]}, {"responses": ["x", "y"]}]
    lists = read_jsonl(write_jsonl(tmp_path / "d.jsonl", rows), DropLog()).lists
    assert lists[0].labels == (2.0, 5.0, 2.0) and lists[0].prompt == chat and lists[0].n_pairs == 2
    assert lists[1].labels == (1.0, 0.0) and lists[1].prompt is None


def test_trl_pairs_plain_and_conversational(tmp_path: Path) -> None:
    u = {"role": "user", "content": "q?"}
    rows = [
        {"prompt": "p", "chosen": "good", "rejected": "bad"},
        {
            "prompt": [u],
            "chosen": [{"role": "assistant", "content": "g"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
        {
            "chosen": [u, {"role": "assistant", "content": "g2"}],
            "rejected": [u, {"role": "assistant", "content": "b2"}],
        },
        {
            "prompt": "plain",
            "chosen": [{"role": "assistant", "content": "g3"}],
            "rejected": [{"role": "assistant", "content": "b3"}],
        },
    ]
    lists = read_trl_pairs(write_jsonl(tmp_path / "p.jsonl", rows), DropLog()).lists
    assert [(rl.responses, rl.labels) for rl in lists[:1]] == [(("good", "bad"), (1.0, 0.0))]
    assert lists[1].prompt == [u] and lists[1].responses == ("g", "b")
    assert lists[2].prompt == [u] and lists[2].responses == ("g2", "b2")  # implicit prompt = shared prefix
    assert lists[3].prompt == [{"role": "user", "content": "plain"}]


def test_oasst_groups_dialogue_and_unranked(tmp_path: Path) -> None:
    items = read_oasst(write_jsonl(tmp_path / "t.jsonl", [oasst_tree("A"), oasst_tree("B")]), DropLog())
    assert len(items.lists) == 4 and items.counts["unranked_groups"] == 2
    root, deep = items.lists[0], items.lists[1]
    assert root.responses == ("A best", "A middle", "A worst") and root.labels == (2.0, 1.0, 0.0)
    assert root.prompt == [{"role": "user", "content": "A hello?"}]
    assert deep.prompt == [
        {"role": "user", "content": "A hello?"},
        {"role": "assistant", "content": "A best"},
        {"role": "user", "content": "A follow-up?"},
    ]
    assert deep.responses == ("A deep good", "A deep bad")
    assert items.groups == ["tree:A", "tree:A", "tree:B", "tree:B"]


def test_oasst_split_never_puts_a_tree_in_two_splits(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "t.jsonl", [oasst_tree(f"T{i}") for i in range(20)])
    splits, info = load_source({"reader": "oasst", "path": str(path)}, 0, DropLog())
    trees = {s: {rl.prompt[0]["content"].split()[0] for rl in lists} for s, lists in splits.items()}
    assert sum(len(t) for t in trees.values()) == 20 and len(trees["val"]) == len(trees["test"]) == 2
    assert not (trees["train"] & trees["val"] or trees["train"] & trees["test"] or trees["val"] & trees["test"])
    assert info["unranked_groups"] == 20


def test_file_splits_disjoint_stable_and_seeded(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", strict_rows(50))
    src = {"reader": "jsonl", "path": str(path), "fractions": [0.6, 0.2, 0.2]}
    a, _ = load_source(src, 3, DropLog())
    b, _ = load_source(src, 3, DropLog())
    c, _ = load_source(src, 4, DropLog())
    assert [len(a[s]) for s in ("train", "val", "test")] == [30, 10, 10]
    assert a == b and a["test"] != c["test"]
    srcs = [{rl.source for rl in a[s]} for s in ("train", "val", "test")]
    assert len(set.union(*srcs)) == 50
    test_file = write_jsonl(tmp_path / "t.jsonl", strict_rows(5))
    d, info = load_source({"reader": "jsonl", "train": str(path), "test": str(test_file)}, 0, DropLog())
    assert len(d["test"]) == 5 and len(d["val"]) == 5 and len(d["train"]) == 45 and info["carved"] == ["val"]


def test_source_config_errors(tmp_path: Path) -> None:
    with pytest.raises(RankrmError, match=r"data.source.reader='csv' must be one of \[.*'file', 'hf'.*'jsonl'"):
        load_source({"reader": "csv"}, 0, DropLog())
    with pytest.raises(RankrmError, match=r"unknown option\(s\) \['k'\]"):
        load_source({"reader": "jsonl", "path": "x", "k": 3}, 0, DropLog())
    with pytest.raises(RankrmError, match="either `path`"):
        load_source({"reader": "jsonl"}, 0, DropLog())


def test_hf_local_files_in_three_formats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")  # keep ~/.cache clean
    lst = write_jsonl(tmp_path / "l.jsonl", [{"q": f"p{i}", "responses": ["a", "b", "c"]} for i in range(10)])
    splits, _ = load_hf(DropLog(), 0, path=str(lst), columns={"prompt": "q"})
    assert sum(len(v) for v in splits.values()) == 10 and splits["train"][0].responses == ("a", "b", "c")
    pairs = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"p{i}", "chosen": "g", "rejected": "b"} for i in range(4)])
    uf = write_jsonl(
        tmp_path / "u.jsonl",
        [
            {
                "instruction": "i1",
                "completions": [{"response": "r1", "overall_score": 7.5}, {"response": "r2", "overall_score": 3.0}],
            },
            {"instruction": "i2", "completions": [{"response": "only", "overall_score": 1.0}]},
        ],
    )
    s2, _ = load_hf(DropLog(), 0, train=str(pairs), val=str(pairs), test=str(pairs), format="pairs")
    assert [len(s2[s]) for s in ("train", "val", "test")] == [4, 4, 4]
    log = DropLog(skip_invalid=True)
    s3, _ = load_hf(log, 0, train=str(uf), val=str(uf), test=str(uf), format="ultrafeedback")
    assert s3["train"][0].labels == (7.5, 3.0) and s3["train"][0].prompt == "i1"
    assert log.as_dict() == {"k<2": 3}
    with pytest.raises(DataError, match=r"u\.jsonl:2: field 'completions' has 1 response"):
        load_hf(DropLog(), 0, path=str(uf), format="ultrafeedback")


def test_hf_offline_hub_id_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(RankrmError, match="HF_HUB_OFFLINE is set.*save_to_disk.*data.source.path"):
        load_hf(DropLog(), 0, path="someone/some-ranked-data")
    with pytest.raises(RankrmError, match="not found"):
        load_hf(DropLog(), 0, path=str(tmp_path / "missing.parquet"))


# --- VADER -----------------------------------------------------------------------------------


def test_vader_reads_crlf_bom_and_builds_gapped_lists(tmp_path: Path) -> None:
    folder = write_vader(tmp_path / "v")
    texts = vader.read_ground_truth(folder / "amazonReviewSnippets_GroundTruth.txt", "amazon", DropLog())
    assert len(texts) == 40 and texts[0].id == "amazon0" and texts[0].score == -3.5  # BOM stripped
    assert not any("\r" in t.text for t in texts)
    splits, info = vader.load_vader(DropLog(), 0, data_dir=str(folder), domains=["tweets", "movie", "amazon"])
    assert info["texts"] == {"train": 96, "val": 12, "test": 12}
    seen: list[str] = []
    for lists in splits.values():
        for rl in lists:
            assert rl.k == 4 and list(rl.labels) == sorted(rl.labels, reverse=True)
            assert all(a - b >= 0.5 - 1e-9 for a, b in zip(rl.labels, rl.labels[1:]))
            assert len({r.split()[0] for r in rl.responses}) == 1  # one domain per list
            seen += rl.responses
    assert len(seen) == len(set(seen)) and len(splits["train"]) >= 18


def _split_texts(splits: dict) -> dict[str, set[str]]:
    return {s: {r for rl in lists for r in rl.responses} for s, lists in splits.items()}


def test_vader_splits_stable_disjoint_and_independent_of_k(tmp_path: Path) -> None:
    folder = write_vader(tmp_path / "v", n=60)
    runs = {
        k: vader.load_vader(DropLog(), 7, data_dir=str(folder), domains=["tweets", "movie"], k=k, min_gap=0.2)
        for k in (2, 3)
    }
    again, _ = vader.load_vader(DropLog(), 7, data_dir=str(folder), domains=["tweets", "movie"], k=3, min_gap=0.2)
    assert again == runs[3][0]
    t2, t3 = _split_texts(runs[2][0]), _split_texts(runs[3][0])
    for s in t2:
        assert not (t2[s] & set().union(*(t2[o] for o in t2 if o != s)))
    # the K ablation sees the same split of texts: a text used by K=3 sits in the same split under K=2
    for s in t3:
        assert all(not (t3[s] & t2[o]) for o in t2 if o != s)
    assert runs[2][1]["texts"] == runs[3][1]["texts"]


def test_vader_holdout_domain(tmp_path: Path) -> None:
    folder = write_vader(tmp_path / "v")
    splits, info = vader.load_vader(
        DropLog(), 0, data_dir=str(folder), domains=["movie", "amazon"], holdout_domain="tweets"
    )
    assert info["texts"]["test"] == 40 and info["texts"]["train"] + info["texts"]["val"] == 80
    assert all(r.startswith("tweets") for rl in splits["test"] for r in rl.responses)
    assert not any(r.startswith("tweets") for s in ("train", "val") for rl in splits[s] for r in rl.responses)
    with pytest.raises(RankrmError, match=r"data.source.holdout_domain='reddit' must be one of \['amazon'"):
        vader.load_vader(DropLog(), 0, data_dir=str(folder), holdout_domain="reddit")


def _fake_sdist(folder: Path, inner_files: dict[str, bytes]) -> tuple[Path, str]:
    """An sdist-shaped tar.gz holding a fake hutto_ICWSM_2014.tar.gz; returns (path, inner sha256)."""
    inner = io.BytesIO()
    # mtime=0: "w:gz" would stamp the current second into the gzip header, so two calls straddling a
    # second boundary hashed differently (a flaky CI failure); the blob must depend on the files only.
    with gzip.GzipFile(fileobj=inner, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tf:
        for name, data in inner_files.items():
            info = tarfile.TarInfo(f"hutto_ICWSM_2014/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    blob = inner.getvalue()
    sdist = folder / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as tf:
        info = tarfile.TarInfo("vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz")
        info.size = len(blob)
        tf.addfile(info, io.BytesIO(blob))
    return sdist, hashlib.sha256(blob).hexdigest()


@pytest.fixture
def vader_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[int], dict[str, bytes]]:
    """An empty cache dir, no $RANKRM_VADER_DIR, and a fake `download_sdist` that counts calls."""
    src = write_vader(tmp_path / "src", domains=tuple(VADER_FILES))
    files = {p.name: p.read_bytes() for p in src.iterdir()} | {"vader_sentiment_lexicon.txt": b"lex"}
    cache = tmp_path / "cache" / "vader"
    calls: list[int] = []

    def fake_download(dest: Path) -> Path:
        calls.append(1)
        return _fake_sdist(dest, files)[0]

    monkeypatch.delenv(vader.ENV_DIR, raising=False)
    monkeypatch.setattr(vader, "default_cache_dir", lambda: cache)
    monkeypatch.setattr(vader, "download_sdist", fake_download)
    return cache, calls, files


def test_vader_fetches_once_into_the_cache(vader_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache, calls, files = vader_env
    monkeypatch.setattr(vader, "VADER_SHA256", _fake_sdist(tmp_path, files)[1])
    assert vader.locate(None, ["tweets"]) == cache and calls == [1]
    assert sorted(p.name for p in cache.iterdir()) == sorted(f"{v}_GroundTruth.txt" for v in VADER_FILES.values())
    splits, _ = vader.load_vader(DropLog(), 0)  # all four domains, from the cache, no second fetch
    assert calls == [1] and sum(len(v) for v in splits.values()) > 0
    monkeypatch.setenv(vader.ENV_DIR, str(tmp_path / "src"))
    assert vader.locate(None, ["tweets"]) == tmp_path / "src"
    with pytest.raises(RankrmError, match="lacks VADER files"):
        vader.locate(str(tmp_path), ["tweets"])


def test_vader_rejects_a_wrong_checksum(vader_env) -> None:
    cache, calls, _ = vader_env
    with pytest.raises(RankrmError, match="sha256 [0-9a-f]{64}, expected d5bb07d8.*data_dir"):
        vader.locate(None, ["tweets"])
    assert calls == [1] and not cache.exists()  # nothing half-written into the cache


def test_vader_pip_failure_says_what_to_do(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Failed:
        returncode, stderr = 1, "ERROR: No matching distribution found for vaderSentiment==3.3.2"

    monkeypatch.setattr(vader.subprocess, "run", lambda *a, **k: Failed())
    with pytest.raises(RankrmError, match="PyPI failed .*No matching distribution.*RANKRM_VADER_DIR"):
        vader.download_sdist(tmp_path)


def test_as_many_pairs_as_c_k_2(tmp_path: Path) -> None:
    """Sanity of the pair count the as_pairs expansion relies on (strict lists: C(K, 2))."""
    rows = [{"responses": [f"r{j}" for j in range(k)]} for k in (2, 3, 5)]
    lists = read_jsonl(write_jsonl(tmp_path / "d.jsonl", rows), DropLog()).lists
    assert [rl.n_pairs for rl in lists] == [len(list(combinations(range(k), 2))) for k in (2, 3, 5)]
    assert json.dumps([rl.labels for rl in lists])
