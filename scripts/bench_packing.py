"""Packed encodings (`backbone.packing`, issue 18) side by side with padded batches and TRL's RewardTrainer.

Systems, each in its own process (so peak RSS is per system), interleaved repeat by repeat:
- `none`: rankrm's padded batches (`backbone.packing=none`);
- `lists`: padding-free rows (`backbone.packing=lists`; kernel sdpa_varlen, rankrm/varlen.py);
- `shared_prompt`: each list's longest common prefix (the prompt, at least) encoded once, its responses
  attending to it (decoders only);
- `lists_dense`, `shared_prompt_dense`: the same through transformers' SDPA with dense block masks (rows as
  wide as the longest group), to compare the two kernels;
- `trl`: TRL's RewardTrainer on every list's strictly ordered pairs (scripts/bench_trl.py's worker).

Data: the same lists for every system, and none longer than --max-length tokens in rankrm's tokenisation
(longer lists are dropped, and counted, before any system runs: no side truncates or filters):
- `--data oasst`: the OASST ranked dialogues, chat prompts ($RANKRM_DATA_DIR/oasst-en100-ranked/
  en_100_tree.jsonl, or --oasst-path); train pool = the train split, shuffled (seeded); val = val + test;
- `--data vader`: VADER K-way lists, no prompt (bench_common.prepare_vader_lists: val drawn apart).
The val lists never depend on --train-lists.

Measured:
1. Throughput: every system trains one epoch on the first --train-lists lists of the pool (medians of
   --repeats): lists/s over the training window (trainer built to train end, tokenisation included),
   tokens encoded per list, real and padded (rankrm: metrics.json's train.tokens_encoded; TRL: the cells
   of its padded pair batches), beside the limit P + sum_k R_k (P: each list's longest common prefix, the
   prompt at least, once; R_k: the rest of each response), peak RSS, and val metrics (rankrm's modes
   agree: they are exact).
2. Equal wall time (with trl): each rankrm system trains on as many pool lists as its measured rate fits
   into TRL's median training time (one epoch, its own LR schedule); all scored on the same val lists.

Full size (an idle machine; see scripts/README.md):

    RANKRM_DATA_DIR=<data dir> python scripts/bench_packing.py --data oasst --backbone smollm2 \\
        --train-lists 24 --lists-per-batch 1 --repeats 3 --threads 2 \\
        --out scripts/results/bench_packing_oasst_smollm2.json
    python scripts/bench_packing.py --data vader --backbone minilm --train-lists 200 --repeats 3 \\
        --threads 2 --out scripts/results/bench_packing_vader_minilm.json

On one GPU (scripts/gpu_check.sh): `--trainer gpu` (bf16 autocast on both sides).
Smoke (tests): `--quick --backbone tiny_qwen --data oasst --oasst-path FILE`.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

# sibling modules: `python scripts/x.py` puts scripts/ on the path
import bench_common as bc
import bench_measure as bm

SYSTEMS: dict[str, list[str]] = {
    "none": ["backbone.packing=none"],
    "lists": ["backbone.packing=lists"],
    "shared_prompt": ["backbone.packing=shared_prompt"],
    "lists_dense": ["backbone.packing=lists", "backbone.attn_implementation=sdpa"],
    "shared_prompt_dense": ["backbone.packing=shared_prompt", "backbone.attn_implementation=sdpa"],
    "trl": [],
}
COLUMNS = [
    ("system", "system"),
    ("lists_per_s", "lists/s"),
    ("speedup_vs_none", "x none"),
    ("speedup_vs_trl", "x TRL"),
    ("tokens_per_list", "tokens/list"),
    ("limit_per_list", "limit P+ΣR"),
    ("padded_per_list", "padded/list"),
    ("padded_share", "padded share"),
    ("peak_rss_mb", "peak RSS MB"),
    ("train_s", "train s"),
    ("val_pair_acc", "val pair acc"),
]
EQUAL_COLUMNS = [
    ("system", "system"),
    ("train_lists", "train lists"),
    ("train_s", "train s"),
    ("val_pair_acc", "val pair acc"),
    ("val_kendall_tau", "val Kendall tau"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = bc.parser(
        __doc__,
        f"{bc.VADER_OPTIONS} threads",
        train_lists=(200, "train lists of each throughput run (the first of the pool)"),
        max_length=(None, "data.max_length; default per data set: 512 (OASST dialogues), 128 (VADER)"),
        k=(4, "VADER: responses per list"),
        val_lists=(100, "VADER: val lists"),
        lists_per_batch=(4, "batch in lists (TRL: x its pairs per list)"),
        repeats=(3, "throughput runs per system; medians are reported"),
    )
    p.add_argument("--data", choices=["oasst", "vader"], default="oasst")
    p.add_argument("--oasst-path", default=None, help="OASST trees JSONL (default under $RANKRM_DATA_DIR)")
    p.add_argument("--pool-lists", type=int, default=600, help="VADER: train pool the equal-time runs draw from")
    p.add_argument("--lr", type=float, default=5e-5, help="peak learning rate (all systems)")
    p.add_argument("--systems", nargs="+", default=["none", "lists", "shared_prompt", "trl"], choices=list(SYSTEMS))
    p.add_argument("--trainer", choices=["cpu", "gpu"], default="cpu", help="gpu: trainer=gpu, bf16 on both sides")
    p.add_argument("--no-equal-time", action="store_true", help="skip the equal-wall-time accuracy runs")
    args = p.parse_args(argv)
    args.max_length = args.max_length or (512 if args.data == "oasst" else 128)
    if args.quick:
        args.train_lists, args.pool_lists, args.val_lists, args.lists_per_batch, args.repeats = 8, 24, 4, 2, 1
        args.max_length = min(args.max_length, 128)
    return args


def oasst_path(flag: str | None) -> str:
    """`--oasst-path`, else the copy under the data root ($RANKRM_DATA_DIR, `rankrm.paths`)."""
    from rankrm.paths import data_root

    return flag or str(data_root() / "oasst-en100-ranked" / "en_100_tree.jsonl")


# ---------------------------------------------------------------- parent side (no torch: see bench_common)


def rankrm_run(args: argparse.Namespace, system: str, name: str, data: dict[str, Any], train: str) -> dict[str, Any]:
    """One rankrm training run through the CLI; adds the tokens it encoded (metrics.json)."""
    workdir = Path(data["workdir"])
    lists = {"train": train, "val": data["val"], "test": data["val"]}
    overrides = [
        *bc.data_overrides(args.backbone, "ranklist", lists, args.seed, args.lists_per_batch, args.max_length),
        "backbone.dropout=0.0",  # TRL's default (disable_dropout); also makes the three modes train alike
        *SYSTEMS[system],
        "data.overlong=filter",
        f"optimizer.lr={args.lr}",
        *(["trainer=gpu"] if args.trainer == "gpu" else []),
    ]
    res = bc.run_rankrm_cli(name, overrides, workdir, args.threads, val_file=data["val"], max_length=args.max_length)
    tokens = json.loads((workdir / f"{name}_run" / "metrics.json").read_text())["train"]["tokens_encoded"]
    res.update(tokens_real=tokens["real"], tokens_padded=tokens["padded"])
    return res


def trl_run(args: argparse.Namespace, name: str, data: dict[str, Any], train: str) -> dict[str, Any]:
    """TRL's RewardTrainer on the lists' pairs, through scripts/bench_trl.py's worker."""
    spec = {
        "name": name,
        "backbone": args.backbone,
        "lists_per_batch": args.lists_per_batch,
        "pairs_per_list": max(1, round(data["pairs_per_list"])),  # batch in pairs = lists x mean pairs a list
        "max_length": args.max_length,
        "lr": args.lr,
        "threads": args.threads,
        "seed": args.seed,
        "gradient_checkpointing": False,
        "gpu": args.trainer == "gpu",
        "bf16": args.trainer == "gpu",
        "train": train,
        "val": data["val"],
    }
    return bc.run_worker("bench_trl:trl_worker", spec, Path(data["workdir"]), args.threads)


def run(args: argparse.Namespace, system: str, name: str, data: dict[str, Any], n_lists: int) -> dict[str, Any]:
    """One run of one system on the first `n_lists` pool lists; per-list figures."""
    train = write_prefix(data, n_lists)
    res = trl_run(args, name, data, train) if system == "trl" else rankrm_run(args, system, name, data, train)
    cells = res["tokens_real"] + res["tokens_padded"]
    res.update(
        system=system,
        lists_trained=res.get("train_lists", n_lists),  # rankrm: what its data module kept (all: pre-filtered)
        train_lists=n_lists,
        lists_per_s=n_lists / res["train_s"],
        tokens_per_list=res["tokens_real"] / n_lists,
        padded_per_list=res["tokens_padded"] / n_lists,
        padded_share=res["tokens_padded"] / cells if cells else 0.0,
    )
    return res


def write_prefix(data: dict[str, Any], n: int) -> str:
    """The first `n` lists of the pool as a train file (the same lists for every system)."""
    path = Path(data["workdir"]) / f"train_{n}.jsonl"
    if not path.exists():
        lines = Path(data["pool"]).read_text(encoding="utf-8").splitlines()[:n]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def throughput(args: argparse.Namespace, systems: list[str], data: dict[str, Any]) -> list[dict[str, Any]]:
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in systems}
    for rep in range(args.repeats):
        for system in systems:  # interleaved, so slow drift in load hits every system alike
            runs[system].append(run(args, system, f"{system}_r{rep}", data, args.train_lists))
    rows = [bc.median_runs(r) for r in runs.values()]
    base = {r["system"]: r["lists_per_s"] for r in rows}
    for r in rows:
        r["speedup_vs_none"] = r["lists_per_s"] / base["none"] if "none" in base else None
        r["speedup_vs_trl"] = r["lists_per_s"] / base["trl"] if "trl" in base else None
        r["limit_per_list"] = data["limit_per_list"] if r["system"] != "trl" else None
    return rows


def equal_time(args: argparse.Namespace, rows: list[dict[str, Any]], data: dict[str, Any]) -> list[dict[str, Any]]:
    """Each rankrm system on as many lists as its rate fits into TRL's training time; TRL's own run as is."""
    trl = next(r for r in rows if r["system"] == "trl")
    out = [{**trl, "pool_exhausted": False}]
    for r in rows:
        if r["system"] == "trl":
            continue
        want = round(r["lists_per_s"] * trl["train_s"])
        n = min(data["pool_lists"], max(args.lists_per_batch, want))
        res = run(args, r["system"], f"{r['system']}_eq{n}", data, n)
        out.append({**res, "pool_exhausted": want > data["pool_lists"], "lists_wanted": want})
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if "trl" in args.systems and importlib.util.find_spec("trl") is None:
        raise SystemExit("TRL is not installed: pip install -e '.[bench]' (or leave trl out of --systems)")
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_packing_"))
    workdir.mkdir(parents=True, exist_ok=True)
    info = bc.machine_info(args.threads)
    spec = {**vars(args), "name": "prepare", "oasst_path": oasst_path(args.oasst_path)}
    data = bc.run_worker("bench_packing:prepare_worker", spec, workdir, args.threads)
    if data["pool_lists"] < args.train_lists:
        raise SystemExit(f"only {data['pool_lists']} train lists fit in {args.max_length} tokens")
    systems = [
        s for s in args.systems if data["causal"] is not False or s not in ("shared_prompt", "shared_prompt_dense")
    ]
    rows = throughput(args, systems, data)
    equal = equal_time(args, rows, data) if "trl" in systems and not args.no_equal_time else []
    info["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    skipped = sorted(set(args.systems) - set(systems))
    md = "\n\n".join(
        [
            f"## backbone.packing vs padded batches vs TRL ({args.data}, {args.backbone}, trainer {args.trainer}, "
            f"max_length {args.max_length}, {args.train_lists} train lists, {args.lists_per_batch} lists per "
            f"batch, {data['val_lists']} val lists, medians of {args.repeats})",
            f"data: {data['summary']}" + (f"; skipped (encoder): {', '.join(skipped)}" if skipped else ""),
            bc.markdown_table(rows, COLUMNS),
            *(
                [
                    f"### Equal wall time: every system trains for TRL's {equal[0]['train_s']:.0f} s",
                    bc.markdown_table(equal, EQUAL_COLUMNS),
                ]
                if equal
                else []
            ),
            bc.load_line(info) + f"; after: {info['loadavg_after']}",
        ]
    )
    payload = {"args": vars(args), "machine": info, "data": data, "rows": rows, "equal_time": equal}
    bc.write_report(args.out, {**payload, "workdir": str(workdir)}, md)
    return 0


# ---------------------------------------------------------------- worker side (child process)


def tokenizer_of(backbone: str) -> tuple[Any, dict[str, Any]]:
    """The tokenizer `rankrm.train` builds for `backbone=<backbone>` (GGUF converted once, cached), and the
    backbone config."""
    from rankrm.backbones import load_tokenizer
    from rankrm.config import group_config, load_option
    from rankrm.convert.gguf import gguf_to_cache
    from rankrm.locate import resolve_name_or_path

    c = group_config("backbone", load_option("backbone", backbone))
    path = resolve_name_or_path(c["name_or_path"])
    return load_tokenizer(gguf_to_cache(Path(path), c["gguf_file"]) if c["gguf_file"] else path, c), c


def read_splits(spec: dict[str, Any]) -> tuple[list[Any], list[Any]]:
    """(train pool, val lists) as RankedLists, before the length filter."""
    import random

    if spec["data"] == "vader":
        files = bc.prepare_vader_lists(
            bc.vader_dir(spec["vader_dir"]),
            spec["k"],
            spec["pool_lists"],
            spec["val_lists"],
            spec["seed"],
            Path(spec["workdir"]) / "vader",
            spec["min_gap"],
        )
        return bm.read_lists(files["train"]), bm.read_lists(files["val"])
    from rankrm.data.sources import read_source

    splits = read_source({"reader": "oasst", "path": spec["oasst_path"]}, spec["seed"]).splits
    pool = list(splits["train"])
    random.Random(f"bench_packing:{spec['seed']}:train").shuffle(pool)
    return pool, list(splits["val"]) + list(splits["test"])


def prepare_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Read the lists, keep those that fit, write pool.jsonl / val.jsonl; token counts of the train lists."""
    from rankrm.config import load_option
    from rankrm.config.packing import config_causal
    from rankrm.data.tokenize import encode_lists
    from rankrm.inputs import InputFormat

    tok, c = tokenizer_of(spec["backbone"])
    fmt = InputFormat(joiner=load_option("data", "jsonl").prompt_joiner)  # as the runs' data=jsonl joins
    out, facts = {}, {}
    for split, lists in zip(("pool", "val"), read_splits(spec)):
        encoded, _ = encode_lists(tok, lists, None, fmt=fmt)  # untruncated: one EncodedList per list
        kept = [(rl, e) for rl, e in zip(lists, encoded) if e.max_len <= spec["max_length"]]
        path = Path(spec["workdir"]) / f"{split}.jsonl"
        path.write_text("".join(json.dumps(list_record(rl)) + "\n" for rl, _ in kept), encoding="utf-8")
        out[split], facts[split] = str(path), (len(lists), kept)
    n = spec["train_lists"]
    timed = facts["pool"][1][:n]
    train = [e for _, e in timed]
    # P: what a decoder can store once, the list's longest common prefix (the prompt, at least); encoders: nothing
    pl = [common_prefix(e.ids) if config_causal(c) is not False else 0 for e in train]
    unshared = sum(e.n_tokens for e in train)
    limit = sum(p + sum(len(s) - p for s in e.ids) for p, e in zip(pl, train))
    pool_read, pool_kept = facts["pool"][0], len(facts["pool"][1])
    val_read, val_kept = facts["val"][0], len(facts["val"][1])
    pairs = sum(rl.n_pairs for rl, _ in facts["pool"][1][:n]) / max(1, min(n, pool_kept))
    return {
        **out,
        "workdir": spec["workdir"],
        "causal": config_causal(c),
        "pool_lists": pool_kept,
        "val_lists": val_kept,
        "dropped_over_max_length": {"pool": pool_read - pool_kept, "val": val_read - val_kept},
        "pairs_per_list": pairs,
        "tokens_per_list_unshared": unshared / max(1, len(train)),
        "limit_per_list": limit / max(1, len(train)),
        "summary": (
            f"{pool_kept} of {pool_read} train-pool and {val_kept} of {val_read} val lists fit in "
            f"{spec['max_length']} tokens; the {len(train)} timed lists hold {unshared / max(1, len(train)):.0f} "
            f"tokens a list unshared, {limit / max(1, len(train)):.0f} with each common prefix once (the limit P+ΣR), "
            f"{pairs:.2f} pairs a list"
        ),
    }


def common_prefix(seqs: list[list[int]]) -> int:
    """Leading tokens all `seqs` share, one short of the shortest (each keeps a token of its own); a plain loop,
    beside rankrm.packing's vectorised `shared_prefixes`."""
    p = 0
    while p < min(len(s) for s in seqs) - 1 and all(s[p] == seqs[0][p] for s in seqs):
        p += 1
    return p


def list_record(rl: Any) -> dict[str, Any]:
    """A RankedList as a line of rankrm's list JSONL (what `data=jsonl` and bench_measure.read_lists read)."""
    row: dict[str, Any] = {"responses": list(rl.responses), "scores": list(rl.labels)}
    if rl.prompt is not None:
        row["prompt"] = rl.prompt
    return row


if __name__ == "__main__":
    sys.exit(main())
