"""Training-step time of the e5_multilingual backbone: fully fine-tuned, with its word-embedding table
frozen (`backbone.freeze_word_embeddings=true`: 96M of its 117.6M parameters), and head-only; beside
minilm, the offline backbone a user would pick instead.

Each system runs in its own child process on the same batches of the seed article's TSV (the training
data module: length grouping, `--max-length`, `--batch-size` lists of 4): one untimed warm-up step,
then `--steps` timed steps of forward + ranklist loss + backward + fused AdamW step + zero_grad.
Systems are interleaved (A, B, C, D, then A, B, C, D again), each cell is the median of the per-run
medians over `--repeats`; peak RSS from the child's wait4.

    python scripts/bench_e5_steps.py --threads 2 --repeats 3 --steps 6 --out scripts/results/bench_e5_steps.json
    python scripts/bench_e5_steps.py --quick      # smoke: tiny backbone, synthetic lists

Data: `--tsv`, else $RANKRM_DATA_DIR/seed-sentiment-ranklists/dev.tsv.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_common import load_line, machine_info, markdown_table, median_runs, run_worker, write_report

from rankrm.paths import data_root

# system -> Hydra overrides on top of `data=seed_tsv`
SYSTEMS = {
    "e5_full": ["backbone=e5_multilingual"],
    "e5_frozen_word_emb": ["backbone=e5_multilingual", "backbone.freeze_word_embeddings=true"],
    "e5_head_only": ["backbone=e5_multilingual", "backbone.freeze=head_only", "backbone.pooling=mean"],
    "minilm_full": ["backbone=minilm"],
}
QUICK = {
    name: [o.replace("e5_multilingual", "tiny_bert").replace("minilm", "tiny_bert") for o in ov]
    for name, ov in SYSTEMS.items()
}


def work(spec: dict[str, Any]) -> dict[str, Any]:
    """Child: build model + data from the training config, time the steps."""
    import torch
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    from rankrm import CONF_DIR
    from rankrm.backbones import build_reward_model
    from rankrm.losses import LOSSES

    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["data=seed_tsv", *spec["overrides"], *spec["data"]])
    model, tok = build_reward_model(cfg.backbone)
    dm = instantiate(cfg.data, tokenizer=tok, seed=0)
    dm.setup("fit")
    batches = iter(dm.train_dataloader())
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, fused=True)
    model.train()
    loss_fn = LOSSES["ranklist"]
    times = []
    for step in range(spec["steps"] + 1):
        batch = next(batches)
        start = time.perf_counter()
        scores = model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (N,)
        rewards = scores.new_zeros(batch["mask"].shape).masked_scatter(batch["mask"], scores)  # (B, K)
        loss_fn(rewards, batch["labels"], batch["mask"]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step:  # step 0 warms up allocators and AdamW's state
            times.append(time.perf_counter() - start)
    return {
        "name": spec["name"],
        "step_s": statistics.median(times),
        "trainable_m": sum(p.numel() for p in params) / 1e6,
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--tsv", default=None, help="the seed TSV (default $RANKRM_DATA_DIR/seed-sentiment-ranklists/dev.tsv)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per run (after one warm-up step)")
    ap.add_argument("--batch-size", type=int, default=8, help="lists of 4 per step")
    ap.add_argument("--max-length", type=int, default=96)
    ap.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    ap.add_argument("--quick", action="store_true", help="smoke: tiny backbone, synthetic lists, 1 repeat of 2 steps")
    ap.add_argument("--out", default=None, help="*.json (results + table) or *.md")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="bench_e5_"))
    tsv = args.tsv or str(data_root() / "seed-sentiment-ranklists" / "dev.tsv")
    if args.quick:
        tsv = str(workdir / "lists.tsv")
        Path(tsv).write_text("".join(f"好 {i}\tgood {i}\tbad {i}\t差 {i}\n" for i in range(40)))
        args.repeats, args.steps = 1, 2
    data = [f"data.source.path={tsv}", f"data.batch_size={args.batch_size}", f"data.max_length={args.max_length}"]
    systems = QUICK if args.quick else SYSTEMS
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in args.systems}
    for r in range(args.repeats):  # interleaved: every system once per repeat
        for name in args.systems:
            spec = {"name": f"{name}-{r}", "overrides": systems[name], "data": data, "threads": args.threads}
            spec["steps"] = args.steps
            runs[name].append(run_worker("bench_e5_steps:work", spec, workdir, args.threads))
            print(f"{name} repeat {r}: {runs[name][-1]['step_s']:.2f} s/step", flush=True)
    rows = [{**median_runs(rs), "name": name} for name, rs in runs.items()]
    table = markdown_table(
        rows,
        [("name", "system"), ("step_s", "s / step"), ("trainable_m", "trainable M"), ("params_m", "params M"),
         ("peak_rss_mb", "peak RSS MB"), ("repeats", "repeats")],
    )  # fmt: skip
    info = machine_info(args.threads)
    payload = {"args": vars(args), "machine": info, "rows": rows, "runs": runs, "command": " ".join(sys.argv)}
    write_report(args.out, payload, table + "\n\n" + load_line(info))
    return 0


if __name__ == "__main__":
    sys.exit(main())
