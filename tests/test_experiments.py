"""experiments/: every ablation config composes (all arms x budgets) and runs 2 steps through the real
CLI with a tiny backbone on tiny data; the runner resumes; the aggregator's intervals match scipy."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest
from data_fixtures import VADER_FILES, oasst_tree, write_asap, write_jsonl, write_vader
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from scipy import stats
from script_modules import load

from rankrm import CONF_DIR
from rankrm.overrides import merge_overrides

common = load("experiments", "common")  # first: plots, aggregate and run import it
load("experiments", "plots")  # aggregate imports it
aggregate = load("experiments", "aggregate")
runner = load("experiments", "run")

NAMES = common.experiment_names()
# The arm each smoke run takes: the one whose overrides differ most from the defaults.
SMOKE_ARM = {
    "lists_vs_pairs": "pairs_pairwise",
    "loss_family": "listmle",
    "list_length": "k9",
    "margin": "label_gap",
    "what_trains": "lora",
    "pooling": "cls",
    "pooling_oasst": "smollm2_mean",
    "overlong": "truncate",
    "loss_family_oasst": "lambdarank",
    "seed_tsv": "seed_recipe",
    "batching": "random",
    "ties": "davidson_learned",
    "ties_oasst": "rao_kupper_learned",
    "asap_stars": "e5_full",
}


@pytest.fixture(scope="module")
def data_overrides(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Tiny VADER files (enough texts for K = 9 val lists) and a tiny OASST trees file."""
    root = tmp_path_factory.mktemp("data")
    vader = write_vader(root / "vader", n=240, domains=tuple(VADER_FILES))
    trees = write_jsonl(root / "trees.jsonl", [oasst_tree(f"t{i}") for i in range(12)])
    tsv = root / "seed.tsv"  # the seed article's format: one best-first list per line, TAB-separated
    tsv.write_text("".join(f'best {i}\tgood {i}\tbad {i}\t"worst, {i}"\n' for i in range(40)))
    return {
        "vader": f"data.source.data_dir={vader}",
        "oasst": f"data.source.path={trees}",
        "seed_tsv": f"data.source.path={tsv}",
        "asap": f"data.source.data_dir={write_asap(root / 'asap')}",
    }


def test_experiment_list_is_complete() -> None:
    assert set(common.ORDER) <= set(NAMES), "ORDER names a config that does not exist"
    assert set(SMOKE_ARM) == set(NAMES), "every experiment needs a smoke arm here"


@pytest.mark.parametrize("name", NAMES)
def test_every_arm_and_budget_composes(name: str) -> None:
    spec = common.load_spec(name)
    header = (common.CONF_DIR / f"{name}.yaml").read_text().splitlines()
    assert header[0] == "# @package _global_"
    assert any(f"python experiments/run.py {name}" in line for line in header), "header must give the command"
    assert set(spec.gpu_arms) <= set(spec.arms) and {"quick", "full"} <= set(spec.budgets)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for budget in spec.budgets:
            for arm in spec.arms:
                ov = merge_overrides(spec.budgets[budget], spec.arm_overrides(arm, budget))
                cfg = compose("train", overrides=[f"experiment={name}", *ov])  # unknown keys raise here
                for o in ov:  # each plain value override really lands in the config
                    key, value = o.split("=", 1)
                    if "." in key:
                        assert str(_select(cfg, key)) == str(_parse(value)), (arm, budget, o)


def _select(cfg: Any, key: str) -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.select(cfg, key)


def _parse(value: str) -> Any:
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(value, value)


def _data_group(name: str) -> str:
    """The data config an experiment overrides (`- override /data: oasst`), vader by default."""
    defaults = OmegaConf.to_container(OmegaConf.load(common.CONF_DIR / f"{name}.yaml")).get("defaults", [])
    return next((v for d in defaults if isinstance(d, dict) for k, v in d.items() if k == "override /data"), "vader")


@pytest.mark.parametrize("name", NAMES)
def test_smoke_run_through_the_cli(
    name: str, tmp_path: Path, data_overrides: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    data = data_overrides[_data_group(name)]
    argv = [
        name,
        "--smoke",
        "--root",
        str(tmp_path),
        "--seeds",
        "0",
        "--arms",
        SMOKE_ARM[name],
        "--threads",
        "1",
        "--set",
        data,
    ]
    assert runner.main(argv) == 0, (tmp_path / "runs").rglob("run.log").__next__().read_text()[-3000:]
    path = common.result_path(tmp_path / "results", name, "quick", SMOKE_ARM[name], 0)
    rec = json.loads(path.read_text())
    assert rec["smoke"] and rec["arm"] == SMOKE_ARM[name] and rec["seed"] == 0
    assert rec["metrics"]["train"]["global_steps"] == 2
    assert 0.0 <= rec["metrics"]["val"]["pair_acc"] <= 1.0 and rec["val_curve"]
    assert f"experiment={name}" in rec["command"] and "backbone=tiny_" in rec["command"]
    run_dir = tmp_path / "runs" / name / "quick" / SMOKE_ARM[name] / "seed0"
    assert (run_dir / "metrics.json").is_file() and not (run_dir / "checkpoints").exists()
    capsys.readouterr()
    assert runner.main(argv) == 0  # resumable: the second call finds the result and runs nothing
    assert "skip" in capsys.readouterr().out


def test_jobs_runs_seeds_side_by_side(tmp_path: Path, data_overrides: dict[str, str]) -> None:
    argv = [
        "margin",
        "--smoke",
        "--root",
        str(tmp_path),
        "--seeds",
        "0",
        "1",
        "--arms",
        "none",
        "label_gap",
        "--threads",
        "1",
        "--jobs",
        "2",
        "--set",
        data_overrides["vader"],
    ]
    assert runner.main(argv) == 0
    recs = [
        json.loads(common.result_path(tmp_path / "results", "margin", "quick", arm, s).read_text())
        for arm in ("none", "label_gap")
        for s in (0, 1)
    ]
    assert [(r["arm"], r["seed"]) for r in recs] == [("none", 0), ("none", 1), ("label_gap", 0), ("label_gap", 1)]
    assert all(f"seed={r['seed']}" in r["command"] for r in recs)


def test_smoke_swaps_pretrained_backbones_for_tiny_ones() -> None:
    assert runner.smoke_arm(["backbone=smollm2", "backbone.pooling=last_token"]) == [
        "backbone=tiny_qwen",
        "backbone.pooling=last_token",
    ]


def test_gpu_arms_run_only_at_full_budget(tmp_path: Path) -> None:
    spec = common.load_spec("seed_tsv")
    quick = {r.arm for r in runner.plan(spec, "quick", [0], None, tmp_path)}
    full = {r.arm for r in runner.plan(spec, "full", [0], None, tmp_path)}
    assert spec.gpu_arms and not quick & set(spec.gpu_arms) and full == set(spec.arms)


@pytest.mark.parametrize("values", [[0.8, 0.82, 0.79, 0.85], [0.1, 0.5, 0.2], [1.0, 1.0]])
def test_mean_ci_matches_scipy(values: list[float]) -> None:
    mean, half = common.mean_ci(values)
    sem = stats.sem(values)
    lo, hi = stats.t.interval(0.95, len(values) - 1, loc=sum(values) / len(values), scale=sem if sem > 0 else 1e-300)
    assert mean == pytest.approx((lo + hi) / 2) and half == pytest.approx((hi - lo) / 2, abs=1e-12)


def test_fmt_never_prints_negative_zero() -> None:
    assert aggregate.fmt([-0.0004, -0.0002], 3).startswith("0.000 ± ")
    assert aggregate.fmt([-0.0006], 3) == "-0.001" and aggregate.fmt([0.0], 0) == "0"


def test_mean_ci_of_one_value_has_no_interval() -> None:
    mean, half = common.mean_ci([0.7])
    assert mean == 0.7 and math.isnan(half)


def _record(arm: str, seed: int, acc: float, ablation: str = "loss_family") -> dict[str, Any]:
    val = {"pair_acc": acc, "kendall_tau": 2 * acc - 1, "ndcg": 0.9, "exact_order": 0.3, "loss": 0.5}
    return {
        "ablation": ablation,
        "budget": "quick",
        "arm": arm,
        "seed": seed,
        "smoke": False,
        "overrides": [],
        "command": "",
        "val_curve": [{"epoch": 0, "step": 9, **val}],
        "metrics": {
            "val": val,
            "test": val,
            "wall_time_s": 10.0 + seed,
            "train": {"epochs": 1, "sequences_encoded": 480, "global_steps": 30},
        },
    }


def test_aggregate_writes_tables_from_records_only(tmp_path: Path) -> None:
    accs = {"ranklist": [0.80, 0.84, 0.81], "listnet": [0.70, 0.75, 0.71]}
    for arm, values in accs.items():
        for seed, acc in enumerate(values):
            p = common.result_path(tmp_path / "results", "loss_family", "quick", arm, seed)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(_record(arm, seed, acc)))
    (tmp_path / "findings.yaml").write_text("loss_family: Hand-written finding.\n")
    assert (
        aggregate.main(
            [
                "--results",
                str(tmp_path / "results"),
                "--out",
                str(tmp_path),
                "--findings",
                str(tmp_path / "findings.yaml"),
            ]
        )
        == 0
    )
    text = (tmp_path / "RESULTS.md").read_text()
    for arm, values in accs.items():
        half = stats.t.ppf(0.975, 2) * stats.sem(values)
        assert f"| {arm} | 3 | {sum(values) / 3:.3f} ± {half:.3f} |" in text
    assert "**Finding.** Hand-written finding." in text
    assert text.count("**Not run yet.**") == len(NAMES) - 1
    assert (tmp_path / "figures" / "loss_family_quick.png").is_file()
    assert text.index("| ranklist |") < text.index("| listnet |"), "rows follow the config's arm order"
    diffs = [b - a for a, b in zip(accs["ranklist"], accs["listnet"])]  # paired by seed, vs the first row
    half = stats.t.ppf(0.975, 2) * stats.sem(diffs)
    row = next(line for line in text.splitlines() if line.startswith("| listnet |"))
    assert row.endswith(f"| {sum(diffs) / 3:.3f} ± {half:.3f} | {sum(diffs) / 3:.3f} ± {half:.3f} |"), row
    assert "| (reference) | (reference) |" in next(
        line for line in text.splitlines() if line.startswith("| ranklist |")
    )


def test_aggregate_tables_length_bias_and_calibration_when_runs_have_a_test_report(tmp_path: Path) -> None:
    rhos = {"ranklist": [0.10, 0.20, 0.15], "listnet": [0.30, 0.25, 0.35]}
    for arm, values in rhos.items():
        for seed, rho in enumerate(values):
            rec = _record(arm, seed, 0.8)
            rec["metrics"]["test_report"] = {
                "metrics": {"pair_acc": 0.8},
                "length_bias": {"spearman_mean": rho, "longer_wins_acc": 0.5},
                "calibration": {"nll_before": 0.4, "ece_before": 0.05, "temperature": 2.0},
            }
            p = common.result_path(tmp_path / "results", "loss_family", "quick", arm, seed)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(rec))
    assert aggregate.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Length bias and calibration" in text
    half = stats.t.ppf(0.975, 2) * stats.sem(rhos["listnet"])
    section = text[text.index("Length bias and calibration") :]
    row = next(line for line in section.splitlines() if line.startswith("| listnet | 3 |"))
    assert row.split(" | ")[3] == f"0.300 ± {half:.3f}", row  # after arm, seeds, test pair acc


def test_paired_to_compares_an_arm_with_its_own_reference(tmp_path: Path) -> None:
    """pooling_oasst's decoder mean arm is paired with the decoder's last token (same backbone), not
    with the encoder arm that heads the table; the last-token arm is paired with that one."""
    spec = common.load_spec("pooling_oasst")
    assert spec.paired_to == {"smollm2_mean": "smollm2_last_token"}
    accs = {
        "minilm_pooler": [0.80, 0.84, 0.81],
        "smollm2_last_token": [0.60, 0.66, 0.62],
        "smollm2_mean": [0.65, 0.70, 0.66],
    }
    for arm, values in accs.items():
        for seed, acc in enumerate(values):
            p = common.result_path(tmp_path / "results", "pooling_oasst", "quick", arm, seed)
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(json.dumps(_record(arm, seed, acc, ablation="pooling_oasst")))
    assert aggregate.main(["--results", str(tmp_path / "results"), "--out", str(tmp_path)]) == 0
    rows = {
        line.split(" | ")[0][2:]: line
        for line in (tmp_path / "RESULTS.md").read_text().splitlines()
        if line.startswith("| smollm2")
    }
    for arm, ref, suffix in [
        ("smollm2_mean", "smollm2_last_token", " vs smollm2_last_token"),
        ("smollm2_last_token", "minilm_pooler", ""),
    ]:  # the first arm goes unnamed
        diffs = [a - r for r, a in zip(accs[ref], accs[arm])]
        cell = f"{sum(diffs) / 3:.3f} ± {stats.t.ppf(0.975, 2) * stats.sem(diffs):.3f}{suffix}"
        assert rows[arm].endswith(f"| {cell} | {cell} |"), rows[arm]


def test_paired_to_with_an_unknown_arm_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "x.yaml").write_text(
        "ablation:\n  title: t\n  paper: p\n  arms: {a: [], b: []}\n  seeds: [0]\n"
        "  budgets: {full: []}\n  paired_to: {b: c}\n"
    )
    monkeypatch.setattr(common, "CONF_DIR", tmp_path)
    with pytest.raises(SystemExit, match="paired_to names arms that do not exist: c"):
        common.load_spec("x")


def test_committed_results_md_is_current_and_findings_quote_its_tables(tmp_path: Path) -> None:
    """RESULTS.md is exactly what aggregate.py makes of the committed run records, and every
    `mean ± half-width` a hand-written finding quotes appears in its own ablation's section."""
    assert aggregate.main(["--out", str(tmp_path)]) == 0
    text = (tmp_path / "RESULTS.md").read_text()
    assert text == (common.EXP_DIR / "RESULTS.md").read_text(), "run `python experiments/aggregate.py`"
    sections = {
        s.split("run.py ", 1)[1].split()[0]: s.split("**Finding.**")[0]  # the generated part only
        for s in text.split("\n## ")[1:]
        if "run.py " in s
    }
    findings = OmegaConf.to_container(OmegaConf.load(common.EXP_DIR / "findings.yaml"))
    for name, finding in findings.items():  # type: ignore[union-attr]
        for quoted in re.findall(r"\d+\.\d+ ± \d+\.\d+", finding):
            assert quoted in sections[name], f"{name}: the finding quotes {quoted}, its table does not"
