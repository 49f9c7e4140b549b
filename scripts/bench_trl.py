"""Side by side: TRL `RewardTrainer` on expanded pairs vs rankrm on the lists themselves.

Three systems, each in its own process (so peak RSS is per system), same machine, backbone,
VADER lists, max_length, learning rate, schedule, threads, lists seen and batch (in lists):

- `trl`: TRL `RewardTrainer` on every list expanded into its C(K,2) chosen/rejected pairs, as a
  TRL user would feed it (batch = lists_per_batch * C(K,2) pairs);
- `rankrm_ranklist`: `python -m rankrm.train loss=ranklist` on the lists (batch = lists);
- `rankrm_pairwise`: `python -m rankrm.train loss=pairwise data.as_pairs=true` on the same
  pairs (batch = lists_per_batch * C(K,2) pairs).

All three models are scored afterwards on the SAME held-out lists by the same code and
rankrm's metric functions (pair accuracy, Kendall tau). Throughput counts the window from
building the trainer (incl. tokenisation: TRL tokenises up front, rankrm in its data module)
to the end of training; model loading and evaluation are outside it (`process_wall_s` has all).
Parity settings on the TRL side, each a deviation from a TRL default that would otherwise
make the comparison unfair: fp32 (TRL defaults to bf16 autocast), gradient checkpointing off
(TRL defaults to on; `--gradient-checkpointing` turns it on for all three), no checkpoint saving (neither
side saves), warmup 10% + linear decay, weight decay 0.01, grad clip 1.0 (rankrm's defaults).
Dropout is off on both sides (TRL's default `disable_dropout=True`; rankrm `backbone.dropout=0.0`),
and both start from the same weights (rankrm's backbone built with the same seed, exported with
`rankrm.export.to_hf_classifier` for TRL).

Full-size measurement (a quiet machine, ~1 h on 2 cores; K=9 dominates: TRL sees 36 pairs a list):

    python scripts/bench_trl.py --ks 4 9 --train-lists 200 --val-lists 150 --lists-per-batch 4 \
        --max-length 128 --threads 2 --repeats 3 --out bench_trl.json

Mid-size check (~15 min): `python scripts/bench_trl.py --ks 4 --train-lists 200 --repeats 1`.
On a loaded machine use `--threads 1`: a 2-thread process stalls in OpenMP barriers whenever
another process holds one of the 2 cores (steps measured 3x slower at load 4).
Smoke (tests): `python scripts/bench_trl.py --quick --backbone tiny_bert --vader-dir DIR`.
VADER: `--vader-dir`, else $RANKRM_VADER_DIR, else $RANKRM_DATA_DIR/vader-human-sentiment, else the
user cache (fetched once from PyPI).
Goals (measured, not asserted): rankrm >= 3x TRL lists/s at K=4, >= 7x at K=9, val pair
accuracy no worse, peak RSS no higher.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from math import comb
from pathlib import Path
from typing import Any

# sibling modules: `python scripts/x.py` puts scripts/ on the path
import bench_common as bc
import bench_measure as bm

SYSTEMS = ("trl", "rankrm_ranklist", "rankrm_pairwise")
COLUMNS = [
    ("k", "K"),
    ("system", "system"),
    ("lists_per_s", "lists/s"),
    ("pairs_per_s", "pairs/s"),
    ("speedup_vs_trl", "x TRL"),
    ("train_s", "train s"),
    ("process_wall_s", "process s"),
    ("peak_rss_mb", "peak RSS MB"),
    ("pad_share", "padded share"),
    ("steps", "steps"),
    ("val_pair_acc", "val pair acc"),
    ("val_kendall_tau", "val Kendall tau"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bc.parser(__doc__, f"{bc.VADER_OPTIONS} val_lists threads repeats")
    p.add_argument("--lists-per-batch", type=int, default=4, help="batch in lists (pairs: x C(K,2))")
    p.add_argument("--ks", type=int, nargs="+", default=[4, 9], help="list lengths K to measure")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (all systems)")
    p.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    p.add_argument(
        "--gradient-checkpointing",
        action="store_true",
        help="recompute activations in the backward, in all systems (non-reentrant on both sides)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.ks, args.train_lists, args.val_lists, args.lists_per_batch = [3], 8, 4, 2
        args.max_length, args.repeats = 128, 1
    return args


def spec_for(args: argparse.Namespace, k: int, lists: dict[str, str], system: str, rep: int) -> dict[str, Any]:
    return {
        "name": f"k{k}_{system}_r{rep}",
        "system": system,
        "k": k,
        "backbone": args.backbone,
        "lists_per_batch": args.lists_per_batch,
        "pairs_per_list": comb(k, 2),
        "max_length": args.max_length,
        "lr": args.lr,
        "threads": args.threads,
        "seed": args.seed,
        "gradient_checkpointing": args.gradient_checkpointing,
        **lists,
    }


def run_system(spec: dict[str, Any], workdir: Path, threads: int) -> dict[str, Any]:
    """One run of one system; throughput from the pairs it trained on (lists = pairs / C(K,2))."""
    if spec["system"] == "trl":
        res = bc.run_worker("bench_trl:trl_worker", spec, workdir, threads)
    else:
        res = bc.run_rankrm_cli(
            spec["name"], rankrm_overrides(spec), workdir, threads, val_file=spec["val"], max_length=spec["max_length"]
        )
    res["lists"] = res["pairs"] / spec["pairs_per_list"]
    res.update(lists_per_s=res["lists"] / res["train_s"], pairs_per_s=res["pairs"] / res["train_s"])
    return res


def rankrm_overrides(spec: dict[str, Any]) -> list[str]:
    """CLI overrides for the two rankrm systems (equal batch in lists, equal schedule)."""
    pairs = spec["system"] == "rankrm_pairwise"
    batch = spec["lists_per_batch"] * (spec["pairs_per_list"] if pairs else 1)
    loss = "pairwise" if pairs else "ranklist"
    return [
        *bc.data_overrides(spec["backbone"], loss, spec, spec["seed"], batch, spec["max_length"]),
        "backbone.dropout=0.0",
        f"data.as_pairs={str(pairs).lower()}",
        f"optimizer.lr={spec['lr']}",
        f"backbone.gradient_checkpointing={str(spec['gradient_checkpointing']).lower()}",
    ]


def summarise(k: int, system: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    row = bc.median_runs(runs)
    row.update(k=k, system=system)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "trl" in args.systems and importlib.util.find_spec("trl") is None:
        raise SystemExit(
            "TRL is not installed: pip install -e '.[bench]' (or --systems rankrm_ranklist rankrm_pairwise)"
        )
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_trl_"))
    info = bc.machine_info(args.threads)
    rows: list[dict[str, Any]] = []
    for k in args.ks:
        lists = bc.prepare_vader_lists(
            bc.vader_dir(args.vader_dir),
            k,
            args.train_lists,
            args.val_lists,
            args.seed,
            workdir / f"k{k}",
            args.min_gap,
        )
        by_system: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
        for rep in range(args.repeats):
            for system in args.systems:  # interleaved, so slow drift in load hits all systems alike
                by_system[system].append(run_system(spec_for(args, k, lists, system, rep), workdir, args.threads))
        k_rows = [summarise(k, s, runs) for s, runs in by_system.items()]
        trl = next((r for r in k_rows if r["system"] == "trl"), None)
        for r in k_rows:
            r["speedup_vs_trl"] = r["lists_per_s"] / trl["lists_per_s"] if trl else None
        rows += k_rows
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    ckpt = ", gradient checkpointing" if args.gradient_checkpointing else ""
    md = "\n\n".join(
        [
            f"## rankrm vs TRL RewardTrainer ({args.backbone}{ckpt}, max_length {args.max_length}, "
            f"{args.train_lists} train / {args.val_lists} val lists, {args.lists_per_batch} lists "
            f"per batch, medians of {args.repeats})",
            bc.markdown_table(rows, COLUMNS),
            bc.load_line(info) + f"; after: {info['loadavg_after']}",
        ]
    )
    bc.write_report(args.out, {"args": vars(args), "machine": info, "rows": rows, "workdir": str(workdir)}, md)
    return 0


# ---------------------------------------------------------------- worker side (child process)


def expand_pairs(lists: Sequence[Any]) -> tuple[list[str], list[str]]:
    """Every strictly ordered pair of every list, as TRL wants them: (chosen texts, rejected texts)."""
    chosen: list[str] = []
    rejected: list[str] = []
    for rl in lists:
        for i, li in enumerate(rl.labels):
            for j, lj in enumerate(rl.labels):
                if li > lj:
                    chosen.append(rl.responses[i])
                    rejected.append(rl.responses[j])
    return chosen, rejected


def hf_reward_model(backbone: str, seed: int) -> tuple[Any, Any]:
    """TRL's starting model: rankrm's backbone config, built as the rankrm runner builds it
    (same seed, so the same head init), as a transformers ForSequenceClassification."""
    import torch

    from rankrm.backbones import build_reward_model
    from rankrm.config import load_option
    from rankrm.export import to_hf_classifier

    torch.manual_seed(seed)  # the runner's seed_everything(seed) comes right before its build too
    model, tokenizer = build_reward_model(load_option("backbone", backbone))
    return to_hf_classifier(model, tokenizer).train(), tokenizer


def trl_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Train TRL's RewardTrainer on the expanded pairs; score the val lists with rankrm's metrics."""
    import torch

    torch.set_num_threads(spec["threads"])
    from datasets import Dataset
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    train_lists = bm.read_lists(spec["train"])
    chosen, rejected = expand_pairs(train_lists)
    model, tok = hf_reward_model(spec["backbone"], spec["seed"])
    if tok.eos_token is None:  # TRL appends eos to every text; a BERT tokenizer has none
        tok.eos_token = tok.sep_token
    padding, pad_collate = bm.PaddingCounter(), DataCollatorForPreference(pad_token_id=tok.pad_token_id)

    def collator(examples: list[dict]) -> dict:  # TRL's own collator, counting padded slots
        batch = pad_collate(examples)
        padding.count(batch["attention_mask"])
        return batch

    config = RewardConfig(
        output_dir=str(Path(spec["workdir"]) / f"{spec['name']}_out"),
        seed=spec["seed"],
        per_device_train_batch_size=spec["lists_per_batch"] * spec["pairs_per_list"],
        learning_rate=spec["lr"],
        num_train_epochs=1,
        max_length=spec["max_length"],
        lr_scheduler_type="linear",
        warmup_steps=0.1,
        weight_decay=0.01,
        max_grad_norm=1.0,
        gradient_checkpointing=spec["gradient_checkpointing"],
        gradient_checkpointing_kwargs={"use_reentrant": False},
        bf16=False,
        use_cpu=True,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_num_workers=0,
    )
    start = time.perf_counter()
    trainer = RewardTrainer(
        model=model,
        args=config,
        train_dataset=Dataset.from_dict({"chosen": chosen, "rejected": rejected}),
        processing_class=tok,
        data_collator=collator,
    )
    fit_start = time.perf_counter()
    trainer.train()
    end = time.perf_counter()
    train_s, fit_loop_s = end - start, end - fit_start
    kept = len(trainer.train_dataset)  # TRL drops (not truncates) pairs longer than max_length

    def score(lists: list[Any]) -> torch.Tensor:  # (N,); texts as TRL trained on them: text + eos
        enc = tok(
            [t + tok.eos_token for rl in lists for t in rl.responses],
            padding=True,
            truncation=True,
            max_length=spec["max_length"],
            return_tensors="pt",
        )
        return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.squeeze(-1)

    model.eval()
    metrics = bm.evaluate_lists(score, bm.read_lists(spec["val"]))
    return {
        "train_s": train_s,
        "fit_loop_s": fit_loop_s,
        "pairs": kept,
        "pairs_dropped_by_max_length": len(chosen) - kept,
        "peak_rss_rank_mb": bm.vm_hwm_mb(),
        "steps": int(trainer.state.global_step),
        "pad_share": padding.pad_share,
        **{f"val_{k}": v for k, v in metrics.items()},
    }


if __name__ == "__main__":
    sys.exit(main())
