"""`python -m rankrm.evaluate` end to end with a tiny exported model: the output files, results.json recomputed
from scores.jsonl, bad input in one line, checkpoints and run dirs, and `rankrm.train`'s test_report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from data_fixtures import strict_rows, write_jsonl
from omegaconf import OmegaConf

from rankrm import CONF_DIR
from rankrm.backbones import build_reward_model
from rankrm.config import load_option
from rankrm.evaluate import main
from rankrm.evaluation.results import compute_results
from rankrm.evaluation.run import test_report as run_test_report
from rankrm.export import export_model
from rankrm.inputs import DEFAULT_FORMAT
from rankrm.io import atomic_write_json
from rankrm.reward import load_reward_model, score_lists

SUBSETS = ["alpacaeval-easy", "mt-bench-hard", "xstest-should-respond", "hep-go"]


def tiny_export(path: Path) -> Path:
    model, tok = build_reward_model(load_option("backbone", "tiny_bert"))
    with torch.no_grad():  # a large head: rewards differ visibly
        model.head.weight.copy_(torch.randn(model.head.weight.shape, generator=torch.Generator().manual_seed(1)))
    return export_model(model.eval(), tok, path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_export(tmp_path_factory.mktemp("model") / "model")


def data_files(d: Path) -> dict[str, Path]:
    rows = strict_rows(30, k=4)
    for i, row in enumerate(rows):
        row["scores"] = [float((i + j) % 3) for j in range(4)]  # graded with ties
    rb = [
        {
            "prompt": f"q{i}",
            "chosen": f"good answer {i} " + "x " * (i % 4),
            "rejected": f"bad {i}",
            "subset": SUBSETS[i % 4],
            "id": i,
        }
        for i in range(16)
    ]
    rb2 = [
        {
            "prompt": f"q{i}",
            "chosen": [f"c{i}"],
            "rejected": [f"r{i} {j} " + "y " * j for j in range(3)],
            "subset": ["Math", "Focus"][i % 2],
            "id": str(i),
        }
        for i in range(8)
    ]
    rb2 += [
        {"prompt": "colour?", "chosen": ["red"], "rejected": ["dog", "42"], "subset": "Ties", "id": "ref:0"},
        {
            "prompt": "colour?",
            "chosen": ["red", "blue", "green"],
            "rejected": ["dog", "42", "Paris"],
            "subset": "Ties",
            "id": "tied:0",
        },
    ]
    return {
        "lists": write_jsonl(d / "lists.jsonl", rows),
        "rb": write_jsonl(d / "rb.jsonl", rb),
        "rb2": write_jsonl(d / "rb2.jsonl", rb2),
    }


def test_outputs_and_results_recomputed_from_scores(exported: Path, tmp_path: Path) -> None:
    f = data_files(tmp_path)
    specs = [f"jsonl:{f['lists']}", f"rewardbench:{f['rb']}", f"rewardbench2:{f['rb2']}", f"jsonl:{f['lists']}@test"]
    out = tmp_path / "out"
    main([str(exported), *sum((["--data", s] for s in specs), []), "--out", str(out), "--bootstrap", "50"])
    results = json.loads((out / "results.json").read_text())
    assert set(results) == set(specs)
    for spec, e in results.items():
        assert {"metrics", "length_bias", "calibration", "by_gap", "by_rank", "by_group"} <= set(e)
        assert ("rewardbench" in e) == spec.startswith("rewardbench")
        assert set(e["metrics"]["ci95"]) >= {"pair_acc", "kendall_tau", "ndcg"}
    assert set(results[specs[1]]["rewardbench"]) >= {"subsets", "sections", "score", "ci95"}
    assert set(results[specs[1]]["rewardbench"]["subsets"]) == set(SUBSETS)
    assert results[specs[0]]["calibration"]["fit_on"].startswith("the evaluated lists themselves")
    assert results[specs[3]]["calibration"]["fit_on"].startswith("val split")
    records = [json.loads(line) for line in (out / "scores.jsonl").read_text().splitlines()]
    assert sum(r["role"] == "eval" for r in records) == 30 + 16 + 10 + results[specs[3]]["metrics"]["n_lists"]
    again = compute_results(records, results[specs[0]]["settings"])
    assert json.loads(atomic_write_json(tmp_path / "again.json", again).read_text()) == results
    report = (out / "report.md").read_text()
    assert "RewardBench score" in report and "sigmoid((r_i - r_j) / T)" in report
    pngs = sorted(p.name for p in (out / "figures").rglob("*.png"))
    assert pngs.count("reliability.png") == 4 and pngs.count("reward_length.png") == 4
    # the rewards are the model's: the same as scoring the file's first list directly
    rm = load_reward_model(exported, device="cpu")
    lists_recs = [r for r in records if r["spec"] == specs[0]]
    from rankrm.evaluation.specs import load, parse

    first = load(parse(specs[0])).lists[0]
    assert lists_recs[0]["rewards"] == pytest.approx(score_lists(rm, [first])[0], abs=1e-5)


def _error(capsys: pytest.CaptureFixture, args: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(args)
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("rankrm: error: "), err
    return err


def test_bad_data_ends_in_one_line(exported: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"responses": ["a", "b"]}, {"prompt": "p"}])
    assert f"{bad}:2: field 'responses' is missing" in _error(
        capsys, [str(exported), "--data", f"jsonl:{bad}", "--out", str(tmp_path)]
    )
    rb = write_jsonl(
        tmp_path / "rb.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "b", "subset": "chat", "id": 1}]
    )
    err = _error(capsys, [str(exported), "--data", f"rewardbench:{rb}", "--out", str(tmp_path)])
    assert f"{rb}:1: field 'subset' 'chat' is not one of" in err
    assert "no data config named 'vaderr'" in _error(
        capsys, [str(exported), "--data", "vaderr", "--out", str(tmp_path)]
    )
    assert "KIND:PATH" in _error(capsys, [str(exported), "--data", "csvv:x.csv", "--out", str(tmp_path)])


def test_bad_models_end_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from transformers import AutoModelForSequenceClassification, BertConfig

    data = write_jsonl(tmp_path / "l.jsonl", strict_rows(3))
    args = ["--data", f"jsonl:{data}", "--out", str(tmp_path / "o")]
    two = tmp_path / "two_labels"
    cfg = BertConfig(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(two)  # num_labels=2: a classifier, not an RM
    tiny_tok = Path(CONF_DIR).parent / "assets" / "tiny_tokenizer" / "encoder"
    for f in tiny_tok.iterdir():
        (two / f.name).write_bytes(f.read_bytes())
    capsys.readouterr()  # save_pretrained's progress bar is not the runner's output
    assert "has 2 labels; a reward model has 1" in _error(capsys, [str(two), *args])
    (tmp_path / "empty").mkdir()
    assert "no config.json" in _error(capsys, [str(tmp_path / "empty"), *args])
    assert "offline" in _error(capsys, ["someone/not-cached-rm", *args])
    assert "not a model dir" in _error(capsys, [str(tmp_path / "missing"), *args])


def test_a_third_party_classifier_is_scored_on_its_own_logits(tmp_path: Path) -> None:
    """A one-label transformers classifier without rankrm.json (`rankrm.reward.load_classifier`): the rewards in
    scores.jsonl are its logits on (prompt, response) text pairs, what `pipeline` and TRL feed it."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BertConfig

    d = tmp_path / "third_party"
    cfg = BertConfig(
        vocab_size=1000, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=1
    )
    torch.manual_seed(0)
    clf = AutoModelForSequenceClassification.from_config(cfg).eval()
    clf.save_pretrained(d)
    tok = AutoTokenizer.from_pretrained(Path(CONF_DIR).parent / "assets" / "tiny_tokenizer" / "encoder")
    tok.save_pretrained(d)
    rows = strict_rows(5, k=3)
    data = write_jsonl(tmp_path / "l.jsonl", rows)
    main([str(d), "--data", f"jsonl:{data}", "--out", str(tmp_path / "o"), "--bootstrap", "10"])
    records = [json.loads(line) for line in (tmp_path / "o" / "scores.jsonl").read_text().splitlines()]
    for row, rec in zip(rows, records):
        with torch.no_grad():
            enc = tok([row["prompt"]] * len(row["responses"]), row["responses"], padding=True, return_tensors="pt")
            expect = clf(**enc).logits[:, 0].tolist()
        assert rec["rewards"] == pytest.approx(expect, abs=1e-5)


def test_test_report_switches_off() -> None:
    cfg = OmegaConf.create({"test_report": False, "test": True})
    assert run_test_report(cfg, None, None, DEFAULT_FORMAT, Path(".")) is None


@pytest.mark.slow
def test_train_test_report_equals_test_metrics_and_checkpoint_evaluation(tmp_path: Path) -> None:
    from test_train import run_cli

    rows = strict_rows(60, k=4)
    data = write_jsonl(tmp_path / "lists.jsonl", rows)
    run_dir = tmp_path / "run"
    args = [
        "backbone=tiny_bert",
        "data=jsonl",
        f"data.source.path={data}",
        "data.batch_size=4",
        "trainer.max_epochs=1",
        "optimizer.lr=1e-2",
        "threads=1",
        f"hydra.run.dir={run_dir}",
    ]
    proc = run_cli(args, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    report = metrics["test_report"]
    for k in ("pair_acc", "kendall_tau", "ndcg", "top1_acc", "exact_order", "n_lists", "n_pairs"):
        assert report["metrics"][k] == pytest.approx(metrics["test"][k], abs=1e-6), k
    assert (run_dir / "evaluation" / "report.md").is_file()
    assert report["calibration"]["fit_on"].startswith("val split")
    # the same test split from the checkpoint, the export and the run dir, through the CLI
    ckpt = next((run_dir / "checkpoints").glob("best-*.ckpt"))
    for i, model in enumerate([ckpt, run_dir / "model", run_dir]):
        out = tmp_path / f"eval{i}"
        main([str(model), "--data", f"jsonl:{data}@test", "--out", str(out), "--bootstrap", "20"])
        got = json.loads((out / "results.json").read_text())[f"jsonl:{data}@test"]["metrics"]
        assert got["pair_acc"] == pytest.approx(report["metrics"]["pair_acc"], abs=1e-6), model


def test_vader_config_spec_scores_its_test_split_by_domain(
    exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from data_fixtures import VADER_FILES, write_vader

    domains = ("tweets", "movie", "amazon", "nyt")
    monkeypatch.setenv("RANKRM_VADER_DIR", str(write_vader(tmp_path / "vader", n=200, domains=domains)))
    main([str(exported), "--data", "vader", "--out", str(tmp_path / "out"), "--bootstrap", "20"])
    e = json.loads((tmp_path / "out" / "results.json").read_text())["vader"]
    assert e["split"] == "test" and e["calibration"]["fit_on"].startswith("val split")
    assert set(e["by_group"]) == {f"{VADER_FILES[d]}_GroundTruth" for d in domains}  # one row per domain
    assert e["metrics"]["n_lists"] == sum(g["lists"] for g in e["by_group"].values())


@pytest.mark.parametrize("model", ["export", "backbone"])
def test_bench_script_agrees_with_the_transformers_pipeline(exported: Path, tmp_path: Path, model: str) -> None:
    data = write_jsonl(
        tmp_path / "l.jsonl", strict_rows(12, prompt=False)
    )  # no prompt: the pipeline sees the same texts
    script = Path(__file__).resolve().parent.parent / "scripts" / "bench_evaluate.py"
    which = [str(exported)] if model == "export" else ["--backbone", "tiny_bert"]  # the timing command's form
    cmd = [sys.executable, str(script), *which, "--data", f"jsonl:{data}", "--quick", "--threads", "1"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads(proc.stdout)
    assert res["responses"] == 48 and res["max_abs_reward_diff"] < 1e-4
