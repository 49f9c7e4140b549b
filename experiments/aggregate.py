"""Regenerate experiments/RESULTS.md and experiments/figures/*.png from the committed run records.

    python experiments/aggregate.py [--results experiments/results] [--out experiments]

Every number comes from `results/<ablation>/<budget>/<arm>/seed<s>.json` (written by run.py):
mean ± half-width of the 95% Student-t interval over seeds. The only hand-written text is the
paper claim (`ablation.paper` in each conf/experiment/*.yaml) and the finding per ablation in
experiments/findings.yaml.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from common import EXP_DIR, Spec, command_line, experiment_names, load_spec, mean_ci
from omegaconf import OmegaConf
from plots import bar_figure, curve_figure

from rankrm.launch import metric_value
from rankrm.overrides import override_key

# (column title, metric path in a result's "metrics", digits)
COLUMNS = [
    ("val pair acc", "val/pair_acc", 3),
    ("val Kendall τ", "val/kendall_tau", 3),
    ("val NDCG", "val/ndcg", 3),
    ("val exact order", "val/exact_order", 3),
    ("test pair acc", "test/pair_acc", 3),
    ("test Kendall τ", "test/kendall_tau", 3),
    ("wall time (s)", "wall_time_s", 0),
    ("sequences encoded", "train/sequences_encoded", 0),
]


# Length bias and calibration of the test split (`test_report` in metrics.json, written by rankrm.train through
# rankrm.evaluation): a second table for the ablations whose runs recorded one.
REPORT_COLUMNS = [
    ("test pair acc", "test_report/metrics/pair_acc", 3),
    ("Spearman(reward, length)", "test_report/length_bias/spearman_mean", 3),
    ("acc, better is longer", "test_report/length_bias/acc_better_longer", 3),
    ("acc, better is shorter", "test_report/length_bias/acc_better_shorter", 3),
    ('"longer wins"', "test_report/length_bias/longer_wins_acc", 3),
    ("NLL (T=1)", "test_report/calibration/nll_before", 3),
    ("ECE (T=1)", "test_report/calibration/ece_before", 3),
    ("T (fit on val)", "test_report/calibration/temperature", 3),
    ("NLL (fitted T)", "test_report/calibration/nll_after", 3),
    ("ECE (fitted T)", "test_report/calibration/ece_after", 3),
]


def metric(record: dict[str, Any], path: str) -> float | None:
    """`val/pair_acc` -> record["metrics"]["val"]["pair_acc"]; `data/train.overlong_filtered` digs into dicts;
    `last_epoch/loss` reads the last point of the per-epoch val curve."""
    if path.startswith("last_epoch/"):
        return metric_value({"last_epoch": record["val_curve"][-1]} if record.get("val_curve") else {}, path)
    return metric_value(record["metrics"], path)


def fmt(values: list[float], digits: int) -> str:
    """`0.812 ± 0.021` (or just the mean with one seed)."""
    if not values:
        return "–"
    m, h = mean_ci(values)
    mean = f"{m:.{digits}f}".removeprefix("-") if round(m, digits) == 0 else f"{m:.{digits}f}"  # no "-0.000"
    return mean if math.isnan(h) else f"{mean} ± {h:.{digits}f}"


def load_results(results_dir: Path) -> dict[tuple[str, str], dict[str, list[dict[str, Any]]]]:
    """{(ablation, budget): {arm: [records sorted by seed]}}; smoke records are left out."""
    out: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(results_dir.glob("*/*/*/seed*.json")):
        rec = json.loads(path.read_text())
        if not rec.get("smoke"):
            out[(rec["ablation"], rec["budget"])][rec["arm"]].append(rec)
    for arms in out.values():
        for recs in arms.values():
            recs.sort(key=lambda r: r["seed"])
    return out


def table(spec: Spec, arms: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown table, one row per arm (in the config's order), mean ± 95% CI over seeds, then the
    paired differences to the arm's reference (the first arm unless `ablation.paired_to` says)."""
    cols = COLUMNS + [(p, p, 3) for p in spec.extra_columns]
    order = [a for a in spec.arms if a in arms]
    lines = [
        "| arm | seeds | " + " | ".join(c[0] for c in cols) + " | " + " | ".join(t for t, _ in PAIRED) + " |",
        "|---|---|" + "---|" * (len(cols) + len(PAIRED)),
    ]
    for arm in order:
        recs = arms[arm]
        values = [[v for r in recs if (v := metric(r, p)) is not None] for _, p, _ in cols]
        cells = [
            fmt(vs, 0 if i >= len(COLUMNS) and all(v == int(v) for v in vs) else d)  # extra counts: no decimals
            for i, (vs, (_, _, d)) in enumerate(zip(values, cols))
        ]
        ref = spec.paired_to.get(arm, order[0])
        cells += [delta_cell(arm, ref, arms, p, named=ref != order[0]) for _, p in PAIRED]
        lines.append(f"| {arm} | {len(recs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report_table(spec: Spec, arms: dict[str, list[dict[str, Any]]]) -> str | None:
    """Length bias and calibration per arm (mean ± 95% CI over seeds); None if no run recorded a test_report."""
    order = [a for a in spec.arms if a in arms]
    if all(metric(r, REPORT_COLUMNS[0][1]) is None for a in order for r in arms[a]):
        return None
    lines = [
        "| arm | seeds | " + " | ".join(c[0] for c in REPORT_COLUMNS) + " |",
        "|---|---|" + "---|" * len(REPORT_COLUMNS),
    ]
    for arm in order:
        cells = [fmt([v for r in arms[arm] if (v := metric(r, p)) is not None], d) for _, p, d in REPORT_COLUMNS]
        lines.append(f"| {arm} | {len(arms[arm])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# Differences to a reference arm, paired by seed: a seed fixes the data subset, split and batch order
# for every arm, which is most of the spread between seeds, so these intervals are much tighter.
PAIRED = [("Δ val pair acc (paired)", "val/pair_acc"), ("Δ test pair acc (paired)", "test/pair_acc")]


def delta_cell(arm: str, ref: str, arms: dict[str, list[dict[str, Any]]], path: str, named: bool) -> str:
    """`0.012 ± 0.008` (`... vs <ref>` when named): metric(arm) - metric(ref), paired by seed."""
    if ref == arm:
        return "(reference)"
    if ref not in arms:
        return f"– (no {ref} runs)"
    cell = fmt(paired_diffs(arms[arm], arms[ref], path), 3)
    return f"{cell} vs {ref}" if named else cell


def paired_diffs(recs: list[dict[str, Any]], ref: list[dict[str, Any]], path: str) -> list[float]:
    """metric(arm) - metric(reference arm) for every seed both have."""
    by_seed = {r["seed"]: metric(r, path) for r in ref}
    return [
        v - by_seed[r["seed"]]
        for r in recs
        if (v := metric(r, path)) is not None and by_seed.get(r["seed"]) is not None
    ]


def budget_label(spec: Spec, budget: str, arms: dict[str, list[dict[str, Any]]]) -> str:
    """What was actually run: the overrides every run of the table shared (arms add their own), seeds."""
    recs = [r for rs in arms.values() for r in rs]
    arm_keys = {override_key(o) for a in spec.arms for o in spec.arm_overrides(a, budget)}
    shared = [
        o
        for o in recs[0]["overrides"]
        if all(o in r["overrides"] for r in recs) and override_key(o) not in arm_keys | {"seed"}
    ]
    overrides = " ".join(shared) or "none (the config as is)"  # what the runs recorded, not today's config
    seeds = sorted({r["seed"] for r in recs})
    epochs = sorted({r["metrics"]["train"]["epochs"] for r in recs})
    return (
        f"Budget **{budget}**: `conf/experiment/{spec.name}.yaml` + `{overrides}`; "
        f"seeds {', '.join(map(str, seeds))}; epochs {', '.join(map(str, epochs))}; minilm unless the arm says "
        f"otherwise; code {code_label(recs)}; {len(recs)} runs, {total_minutes(recs)} min of run wall time in all."
    )


def total_minutes(recs: list[dict[str, Any]]) -> int:
    """Summed wall time of the runs (what the ablation cost one worker), in whole minutes."""
    return round(sum(r["metrics"].get("wall_time_s", 0.0) for r in recs) / 60)


def code_label(recs: list[dict[str, Any]]) -> str:
    """The commit(s) the runs came from, e.g. `5960b0b` (files edited on top of it are flagged)."""
    commits = sorted({(r.get("code") or {}).get("commit") or "unrecorded" for r in recs})
    dirty = sorted({f for r in recs for f in (r.get("code") or {}).get("dirty", [])})
    label = ", ".join(f"`{c[:7]}`" for c in commits) + (" (one commit)" if len(commits) == 1 else " (MIXED)")
    return label + (f", with uncommitted edits to {', '.join(dirty)}" if dirty else "")


def section(
    spec: Spec, runs: dict[str, dict[str, list[dict[str, Any]]]], findings: dict[str, str], fig_dir: Path
) -> list[str]:
    """One ablation's part of RESULTS.md: command, table(s), figure(s), finding."""
    out = [f"## {spec.title}", "", f"*Paper:* {spec.paper}", ""]
    if not runs:
        return out + ["**Not run yet.** Command:", "", "```", command_line(spec.name, "quick"), "```", ""]
    for budget, arms in sorted(runs.items()):
        out += [
            "```",
            command_line(spec.name, budget),
            "```",
            "",
            budget_label(spec, budget, arms),
            "",
            table(spec, arms),
            "",
        ]
        lengths = report_table(spec, arms)
        if lengths:
            out += ["Length bias and calibration of P(i > j) = sigmoid((r_i - r_j) / T) on test (`test_report`):", ""]
            out += [lengths, ""]
        missing = [
            a + (" (GPU arm: `--budget full` only)" if a in spec.gpu_arms else "") for a in spec.arms if a not in arms
        ]
        if missing:
            out += [f"Arms not run at this budget: {', '.join(missing)}.", ""]
        if spec.note:
            out += [f"*How to read it:* {spec.note}", ""]
        ordered = {a: arms[a] for a in spec.arms if a in arms}
        for fig in (
            bar_figure(spec.name, budget, ordered, fig_dir, metric),
            curve_figure(spec.name, budget, ordered, fig_dir),
        ):
            if fig is not None:
                out += [f"![{fig.stem}](figures/{fig.name})", ""]
    finding = findings.get(spec.name)
    out += [f"**Finding.** {finding}" if finding else "**Finding.** Not written yet.", ""]
    return out


HEADER = """# rankrm — paper ablations (issue #6)

Generated by `python experiments/aggregate.py` from `experiments/results/` — do not edit by hand.
Each cell is the mean ± the half-width of a 95% Student-t interval over seeds (a seed changes the head
init, the data split and subset, and the batch order). Val metrics are those of the checkpoint kept
(best val pair accuracy); test is that checkpoint on the test lists. The Δ columns are each arm minus
the table's first arm (or the arm the cell names), paired by seed (mean ± 95% interval of the
per-seed differences): every arm of a seed draws the same data subset and split (and, where arms
batch alike, the same batch order), so these intervals remove most of the between-seed spread. A Δ
interval that excludes 0 is a resolved difference; overlapping plain intervals alone are not
evidence of no difference. Every table names the budget and the commit its runs came from.

Machine: 2 cores, no GPU. Runs used 1 torch thread each, two runs at a time (`--threads 1`, two
`run.py` processes), so wall time includes process start, data loading, evaluation and a neighbour
on the other core: compare it only within a table. Exception: the seed TSV's SmolLM2 runs used 2
threads, one at a time (each peaks at ~14 GB of RAM).

Budgets: each `conf/experiment/<ablation>.yaml` holds the shared settings (the **full** budget, the
one run here for the VADER ablations) and `ablation.budgets.quick`, a smaller budget for a quick look.
On a GPU: `python experiments/run.py <ablation> --budget full --set trainer=gpu data.limit_train=null
data.limit_val=null data.limit_test=null` (all of VADER; GPU arms, such as the seed TSV's smollm2
arm, run only with `--budget full`). The OpenAssistant ablations (2b, 6b) ran at their `quick` budget
(128 tokens, 1 epoch), the CPU setting; their `full` budget (256 tokens, 2 epochs) is for a GPU. The loss
family's rerun with issue 17's losses (2, quick table) and the ties ablation (10) ran at their `quick`
budget (120 VADER train lists) on a machine shared with other jobs; the full loss-family table (300 lists)
holds the first six losses only, at an older commit.
"""


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--results", type=Path, default=EXP_DIR / "results", help="run records (from run.py)")
    p.add_argument("--out", type=Path, default=EXP_DIR, help="RESULTS.md and figures/ go here")
    p.add_argument("--findings", type=Path, default=EXP_DIR / "findings.yaml", help="hand-written findings")
    args = p.parse_args(argv)
    by_ablation: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = defaultdict(dict)
    for (ablation, budget), arms in load_results(args.results).items():
        by_ablation[ablation][budget] = arms
    findings = OmegaConf.to_container(OmegaConf.load(args.findings)) if args.findings.is_file() else {}
    lines = [HEADER]
    for name in experiment_names():
        lines += section(load_spec(name), by_ablation.get(name, {}), findings or {}, args.out / "figures")
    (args.out / "RESULTS.md").write_text("\n".join(lines).rstrip() + "\n")
    print(f"wrote {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
