"""Glue shared by `python -m rankrm.evaluate` and the end of `rankrm.train`: score the data sets, write
`scores.jsonl`, compute `results.json` from those records (`results.compute_results`), then the
figures and `report.md`. Every file is written atomically (`rankrm.io`)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rankrm.data.records import RankedList
from rankrm.evaluation import figures, report, scorer
from rankrm.evaluation.results import DEFAULTS, compute_results
from rankrm.evaluation.specs import EvalSet, from_source
from rankrm.inputs import InputFormat
from rankrm.io import atomic_write_json, atomic_write_text, atomic_write_with
from rankrm.reward import LoadedRewardModel

log = logging.getLogger("rankrm")


def _records(
    s: EvalSet, role: str, split: str, lists: Sequence[RankedList], rewards: Sequence[Sequence[float]], meta: Any
) -> Iterator[dict[str, Any]]:
    for i, (rl, r) in enumerate(zip(lists, rewards)):
        m = meta[i] if meta is not None else {"id": rl.source, "group": None, "subset": None}
        yield {
            "spec": s.spec,
            "kind": s.kind,
            "role": role,
            "split": split,
            "index": i,
            "id": m["id"],
            "group": m.get("group"),
            "subset": m.get("subset"),
            "labels": list(rl.labels),
            "rewards": list(r),
            "lengths": [len(x) for x in rl.responses],
        }


def score_sets(rm: LoadedRewardModel, sets: Sequence[EvalSet], **score_kw: Any) -> list[dict[str, Any]]:
    """One record per list of every set (its eval lists, then the lists that fit its calibration)."""
    records: list[dict[str, Any]] = []
    for s in sets:
        records += _records(s, "eval", s.split, s.lists, scorer.score(rm, s.lists, **score_kw), s.meta)
        if s.fit:
            fit = scorer.score(rm, s.fit, **score_kw)
            records += _records(s, "fit", s.fit_split or "val", s.fit, fit, None)
    return records


def write(out_dir: Path, records: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], model: str) -> dict:
    """scores.jsonl, results.json (from those records), figures, report.md; returns the results."""
    out_dir = Path(out_dir)
    lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    atomic_write_with(out_dir / "scores.jsonl", lambda f: f.write(lines))
    results = compute_results(records, settings)
    atomic_write_json(out_dir / "results.json", results)
    figs = figures.draw(out_dir, results, records)
    atomic_write_text(out_dir / "report.md", report.render(results, model, figs))
    return results


def evaluate(
    rm: LoadedRewardModel,
    sets: Sequence[EvalSet],
    out_dir: Path,
    settings: Mapping[str, Any] | None = None,
    name: str | None = None,
    **kw: Any,
) -> dict:
    """Score `sets` with `rm` and write everything under `out_dir` (the report names the model `name`, default
    its path); returns results.json's content."""
    settings = {**DEFAULTS, **(settings or {})}
    return write(out_dir, score_sets(rm, sets, **kw), settings, name or str(rm.path))


def test_report(cfg: Any, model: Any, tokenizer: Any, fmt: InputFormat, out_dir: Path) -> dict | None:
    """`rankrm.train`'s last step: the same evaluation on the run's test split (val fits the calibration),
    written to `<run dir>/evaluation/`; the entry goes into metrics.json as `test_report`. Off with
    `test_report=false` (or `test=false`). Scores every test list of the source (all-tied ones aside): a
    `data.limit_test` subset or lists dropped by `data.overlong=filter` are not re-applied here. The model
    is scored in its training weights' dtype, with the run's input format `fmt`."""
    if not cfg.get("test_report", True) or not cfg.get("test", True):
        return None
    import torch
    from omegaconf import OmegaConf

    source = OmegaConf.to_container(cfg.data.source, resolve=True)
    eval_set = from_source("test", source, "test", int(cfg.seed), bool(cfg.data.get("skip_invalid", False)))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")  # Lightning's teardown may move it to CPU
    rm = scorer.in_memory(model.to(device), tokenizer, fmt, Path(out_dir))
    out = Path(out_dir) / "evaluation"
    name = "this run's best checkpoint"
    results = evaluate(rm, [eval_set], out, name=name, max_length=cfg.data.get("max_length"), progress=False)
    log.info("wrote %s", out / "report.md")
    return results["test"]
