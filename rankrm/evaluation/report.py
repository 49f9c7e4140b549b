"""`report.md`: the tables of results.json in Markdown, one section per data spec."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

KIND_TEXT = {"lists": "Ranked lists", "rewardbench": "RewardBench v1 rows", "rewardbench2": "RewardBench 2 rows"}
RANKING = ("pair_acc", "kendall_tau", "ndcg", "ndcg@1", "ndcg@3", "top1_acc", "exact_order")
LENGTH = (
    ("spearman_mean", "mean within-list Spearman(reward, length)", "n_spearman_lists"),
    ("acc_better_longer", "pair acc, better response is longer", "n_pairs_better_longer"),
    ("acc_better_shorter", "pair acc, better response is shorter", "n_pairs_better_shorter"),
    ("acc_same_length", "pair acc, equal lengths", "n_pairs_same_length"),
    ("longer_wins_acc", '"longer wins" baseline (same pairs)', None),
)


def cell(value: Any, ci: Sequence[float] | None = None, digits: int = 3) -> str:
    """`0.876 [0.861, 0.889]`; a missing value is `–`."""
    if value is None:
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    text = f"{value:.{digits}f}"
    return f"{text} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else text


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _ranking(e: Mapping[str, Any]) -> list[str]:
    m = e["metrics"]
    rows = [[k, cell(m.get(k), m["ci95"].get(k))] for k in RANKING if k in m]
    rows.append(["reward ties (pairs)", cell(m.get("n_reward_ties"))])
    return _table(["metric", "value [95% CI]"], rows)


def _rewardbench(e: Mapping[str, Any]) -> list[str]:
    rb = e["rewardbench"]
    ci = rb["ci95"]
    out = [f"**RewardBench score: {cell(rb['score'], ci.get('score'))}**", ""]
    out += _table(
        ["section", "score [95% CI]"], [[s, cell(v, ci["sections"].get(s))] for s, v in rb["sections"].items()]
    )
    if rb["sections_missing"]:
        out += ["", f"Not in the data (left out of the score): {', '.join(rb['sections_missing'])}."]
    rows = [
        [s, cell(v, ci["subsets"].get(s)), str(e["by_group"].get(s, {}).get("lists", ""))]
        for s, v in rb["subsets"].items()
    ]
    return out + [""] + _table(["subset", "accuracy [95% CI]", "rows"], rows)


def _length(e: Mapping[str, Any]) -> list[str]:
    lb = e["length_bias"]
    rows = [[title, cell(lb.get(k), lb["ci95"].get(k)), cell(lb.get(n)) if n else ""] for k, title, n in LENGTH]
    return _table(["length bias", "value [95% CI]", "lists / pairs"], rows)


def _calibration(e: Mapping[str, Any]) -> list[str]:
    c = e["calibration"]
    ci = c["ci95"]
    rows = [
        [f"{tag} (T = {1.0 if tag == 'before' else c['temperature']:.4g})"]
        + [cell(c.get(f"{q}_{tag}"), ci.get(f"{q}_{tag}")) for q in ("nll", "brier", "ece")]
        for tag in ("before", "after")
    ]
    out = _table(["P(i > j) = sigmoid((r_i - r_j) / T)", "NLL", "Brier", "ECE"], rows)
    return out + ["", f"T fitted on {c['fit_on']} ({c['fit_pairs']:,} pairs)."]


def _breakdowns(e: Mapping[str, Any]) -> list[str]:
    out = []
    if len(e["by_group"]) > 1:
        rows = [
            [g, str(v["lists"]), cell(v["pair_acc"]), cell(v["spearman_mean"]), cell(v["longer_wins_acc"])]
            for g, v in e["by_group"].items()
        ]
        out += _table(["source / subset", "lists", "pair acc", "Spearman(reward, length)", "longer wins"], rows) + [""]
    for key, title in (("by_gap", "label gap"), ("by_rank", "rank position")):
        rows = [[k, cell(v["acc"]), f"{v['pairs']:,}"] for k, v in e[key].items()]
        out += _table([title, "pair acc", "pairs"], rows) + [""]
    return out


def render(results: Mapping[str, Any], model: str, figures: Mapping[str, Mapping[str, str]]) -> str:
    lines = [f"# Evaluation of `{model}`", ""]
    for spec, e in results.items():
        m = e["metrics"]
        lines += [
            f"## `{spec}`",
            "",
            f"{KIND_TEXT[e['kind']]}, split {e['split']}: {cell(m['n_lists'])} lists, "
            f"{cell(m['n_pairs'])} pairs. Intervals: 95% percentile bootstrap over lists "
            f"({e['settings']['bootstrap']} resamples, seed {e['settings']['seed']}).",
            "",
        ]
        lines += _ranking(e) + [""]
        if "rewardbench" in e:
            lines += _rewardbench(e) + [""]
        lines += _length(e) + [""] + _calibration(e) + [""] + _breakdowns(e)
        lines += [f"![{name}]({path})" for name, path in figures.get(spec, {}).items()] + [""]
    return "\n".join(lines)
