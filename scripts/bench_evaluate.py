"""Time of scoring a data set with `rankrm.evaluation.scorer.score` (what `python -m rankrm.evaluate` does
before its statistics: `rankrm.reward.score_lists` over the export), side by side with the peer a user
would reach for: a transformers `pipeline("text-classification", function_to_apply="none")` over the same
responses (RewardBench's `run_rm.py` scores that way), same batch size and token limit, one process.

The two systems alternate across `--repeats` (medians reported); both score every response of the
eval lists once, and the script checks their rewards agree. Rankrm also tokenises prompts with their
responses; VADER has no prompt, so both see the same texts. Statistics (bootstrap etc.) are not timed:
`--with-stats` adds the time of `compute_results` on the scored lists. MODEL: an export dir; without it,
the `--backbone` config is built (pretrained backbone, untrained head: the time does not depend on the
head's weights) and exported to a temp dir, so the timing needs no training run.

MiniLM on VADER's 510 test lists (2,040 responses), 2 threads, on an idle machine:

    RANKRM_DATA_DIR=../shared/data python scripts/bench_evaluate.py --backbone minilm --data vader \
        --threads 2 --repeats 5 --with-stats --out scripts/results/bench_evaluate_vader.json

Smoke (tests): `python scripts/bench_evaluate.py --backbone tiny_bert --data jsonl:lists.jsonl --quick`.
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import bench_common as bc


def _pipeline_scores(model_dir: str, texts: list[str], batch_size: int, max_length: int | None) -> list[float]:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=model_dir, function_to_apply="none", device=-1)
    kw = {"batch_size": batch_size, "truncation": True, **({"max_length": max_length} if max_length else {})}
    return [r["score"] for r in pipe(texts, **kw)]


def _fresh_export(backbone: str, out: Path) -> Path:
    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.export import export_model

    model, tokenizer = build_reward_model(load_option("backbone", backbone))
    return export_model(model.eval(), tokenizer, out)


def main(argv: list[str] | None = None) -> int:
    p = bc.parser(__doc__, "backbone threads repeats out", repeats=3)
    p.add_argument("model", nargs="?", help="an export dir (default: export --backbone untrained to a temp dir)")
    p.add_argument("--data", default="vader", help="evaluation data spec (default: VADER's test split)")
    p.add_argument("--batch-size", type=int, default=32, help="sequences per forward, both systems")
    p.add_argument("--max-length", type=int, default=None, help="token limit (default: the model's)")
    p.add_argument("--with-stats", action="store_true", help="also time compute_results (1000 resamples)")
    args = p.parse_args(argv)
    import torch

    from rankrm.evaluation import run, scorer, specs
    from rankrm.evaluation.results import compute_results

    torch.set_num_threads(args.threads)
    tmp = tempfile.TemporaryDirectory()
    model_dir = args.model or str(_fresh_export(args.backbone, Path(tmp.name) / "model"))
    eval_set = specs.load(specs.parse(args.data))
    lists = eval_set.lists[:20] if args.quick else eval_set.lists
    texts = [r for rl in lists for r in rl.responses]
    loaded = scorer.load(model_dir, device="cpu")
    times: dict[str, list[float]] = {"rankrm": [], "pipeline": []}
    for rep in range(1 if args.quick else args.repeats):
        for system in ("rankrm", "pipeline") if rep % 2 == 0 else ("pipeline", "rankrm"):
            start = time.perf_counter()
            if system == "rankrm":
                ours = [x for s in scorer.score(loaded, lists, args.batch_size, args.max_length, False) for x in s]
            else:
                theirs = _pipeline_scores(model_dir, texts, args.batch_size, args.max_length)
            times[system].append(round(time.perf_counter() - start, 3))
    result: dict[str, Any] = {
        "model": args.model or f"{args.backbone} (untrained head)",
        "data": args.data,
        "lists": len(lists),
        "responses": len(texts),
        "batch_size": args.batch_size,
        "seconds": times,
        "median_s": {k: statistics.median(v) for k, v in times.items()},
        "responses_per_s": {k: round(len(texts) / statistics.median(v), 1) for k, v in times.items()},
        "max_abs_reward_diff": max(abs(a - b) for a, b in zip(ours, theirs)),
        "machine": bc.machine_info(args.threads),
    }
    if args.with_stats:
        records = run.score_sets(loaded, [eval_set], batch_size=args.batch_size, progress=False)
        start = time.perf_counter()
        compute_results(records)
        result["stats_s"] = round(time.perf_counter() - start, 3)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
