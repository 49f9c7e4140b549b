"""The model card (README.md) of an export: what the model is, how it was trained and scored, how it
reads its input, and how to load it in each consumer that takes it (the Hub and TRL expect a card).

Everything in it comes from rankrm.json (`meta`) and the training run (`run_summary`); the input format
is shown by decoding the tokens training builds for probe inputs, so the card shows exactly what the
model was trained to read.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from rankrm.export.consumers import PROBES, REPLY, training_ids
from rankrm.inputs import InputFormat

KIND_NAMES = {"plain": "no prompt", "text_prompt": "text prompt", "chat": "chat prompt"}
METRICS = ("pair_acc", "kendall_tau", "ndcg", "top1_acc", "exact_order")
M = "path/to/model"  # the export dir in the examples


def version() -> str:
    """rankrm's installed version (its dist metadata: `import rankrm` here would close an import cycle,
    rankrm -> reward -> export -> card -> rankrm)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("rankrm")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown"


def versions() -> dict[str, str]:
    """Versions of the libraries that wrote the export (those installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    out = {}
    for name in ("torch", "transformers", "sentence_transformers"):
        try:
            out[name] = dist_version(name.replace("_", "-"))
        except PackageNotFoundError:
            pass
    return out


def commit() -> str | None:
    """The git commit of the rankrm source that ran (+ "-dirty" with uncommitted changes under rankrm/), None
    when rankrm is not run from its own git checkout (an installed wheel inside some other repository)."""
    src = Path(__file__).resolve().parents[2]

    def git(*args: str) -> str | None:
        try:
            run = subprocess.run(["git", *args], cwd=src, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return run.stdout.strip() if run.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top is None or Path(top).resolve() != src:
        return None
    head, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--", "rankrm")
    return None if head is None else head + ("-dirty" if dirty else "")


def run_summary(cfg: Any, metrics: dict[str, Any]) -> dict[str, Any]:
    """What a training run tells the export (rankrm.json, card): data, loss, metrics, val reward statistics."""
    from omegaconf import OmegaConf

    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    data = metrics.get("data", {})
    return {
        "data": {k: v for k, v in source.items() if v is not None},
        "data_stats": {
            s: {k: data[s].get(k) for k in ("lists", "pairs")} for s in ("train", "val", "test") if s in data
        },
        "max_length": data.get("max_length"),
        "loss": {"name": cfg.loss.name, **(OmegaConf.to_container(cfg.loss.get("kwargs") or {}, resolve=True))},
        "freeze": cfg.backbone.get("freeze"),
        "metrics": {s: metrics[s] for s in ("val", "test") if s in metrics},
        "reward_stats": metrics.get("reward_stats"),
    }


def _front_matter(meta: dict[str, Any]) -> str:
    hf = meta["format"] == "transformers"
    lines = ["---", f"library_name: {'transformers' if hf else 'sentence-transformers'}"]
    if hf:
        lines.append("pipeline_tag: text-classification")
    base = meta["backbone"]
    if "/" in base and not base.startswith(("pkg://", "/", ".", "~")) and base.count("/") == 1:
        lines.append(f"base_model: {base}")  # a hub id
    lines += ["tags:", "- rankrm", "- reward-model", "---", ""]
    return "\n".join(lines)


def _summary(meta: dict[str, Any], run: dict[str, Any]) -> list[str]:
    rows = [
        ("base model", f"`{meta['backbone']}` ({meta['model_type']})"),
        ("export", f"{meta['format']} `{meta['hf_class']}`, pooling `{meta['pooling']}`"),
    ]
    if run.get("data"):
        counts = ", ".join(f"{s} {v['lists']} lists / {v['pairs']} pairs" for s, v in run["data_stats"].items())
        rows += [("data", f"`{json.dumps(run['data'], ensure_ascii=False)}` ({counts})")]
        rows += [("loss", f"`{json.dumps(run['loss'])}`, backbone.freeze={run.get('freeze')}")]
    for split, m in run.get("metrics", {}).items():
        rows.append((f"{split} metrics", ", ".join(f"{k} {m[k]:.4f}" for k in METRICS if k in m)))
    rows.append(("rankrm", f"{meta['rankrm_version']}, commit `{meta['rankrm_commit'] or 'unknown'}`"))
    return ["| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), ""]


def _input_format(tokenizer: Any, fmt: InputFormat) -> list[str]:
    out = [
        "## Input format",
        "",
        "One sequence per (prompt, response), built as in training (`rankrm.inputs`; prompt joiner "
        f"{fmt.joiner!r}). The tokens of a probe input, decoded:",
        "",
    ]
    for kind, prompt in PROBES.items():
        ids, types = training_ids(tokenizer, fmt, prompt, REPLY)
        pair = " (a text pair: token types 0, then 1)" if types and any(types) else ""
        out.append(f"- {KIND_NAMES[kind]}{pair}: `{tokenizer.decode(ids)!r}`")
    return out + [""]


def _reward_scale(meta: dict[str, Any]) -> list[str]:
    norm, stats = meta["reward_norm"], meta.get("reward_stats")
    out = ["## Reward scale", ""]
    if stats:
        s, r = stats["scores"], stats["raw"]
        out.append(
            f"On the {stats['split']} set ({stats['n']} responses) rankrm's scores have mean {s['mean']:.4g} and std "
            f"{s['std']:.4g} (raw head output: mean {r['mean']:.4g}, std {r['std']:.4g}). "
            "`python -m rankrm.score MODEL --stats FILE` gives them for any data."
        )
    applied = (norm["mean"], norm["std"]) != (0.0, 1.0)
    if applied and not norm["folded_into_head"]:
        out.append(
            f"rankrm returns (raw - {norm['mean']:.6g}) / {norm['std']:.6g}; this head has no bias, so other "
            "consumers get the raw output (the same ranking; OpenRLHF applies the norm with --normalize_reward)."
        )
    elif applied:
        out.append("The norm is folded into the head: every consumer gets the normalised scores.")
    return out + [""]


def _consumer_table(meta: dict[str, Any]) -> list[str]:
    out = [
        "## Which consumer gets which scores",
        "",
        "| consumer | how | scores | no prompt | text prompt | chat prompt | checked |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, e in meta["consumers"].items():
        if not e["loads"]:
            out.append(f"| {name} | `{e['how'].format(dir=M)}` | does not take this export: {e['why']} | | | | |")
            continue
        ins = e["inputs"]
        cells = [ins.get(k, ins.get("all", "")) for k in PROBES] if "all" not in ins else [ins["all"], "", ""]
        how = e["how"].format(dir=M)
        out.append(f"| {name} | `{how}` | {e['scores']} | {' | '.join(cells)} | {e['checked']} |")
    if meta.get("warning"):
        out += ["", f"**Warning:** {meta['warning']}"]
    return out + [""]


def model_card(meta: dict[str, Any], run: dict[str, Any], tokenizer: Any, fmt: InputFormat) -> str:
    """README.md of an export."""
    from rankrm.export.usage import examples

    parts = [
        _front_matter(meta),
        "# Reward model trained with rankrm",
        "",
        "One scalar score per (prompt, response), higher is better, trained on human-ranked lists with rankrm.",
        "",
        *_summary(meta, run),
        *_input_format(tokenizer, fmt),
        *_reward_scale(meta),
        "## Use it",
        "",
        *examples(meta, fmt, getattr(tokenizer, "sep_token", None) is not None),
        *_consumer_table(meta),
    ]
    return "\n".join(parts)
