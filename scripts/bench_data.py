"""Data at scale (issue 14): building the token cache, starting from it, and the in-memory path before it.

Synthetic list JSONL made here, shaped like preference sets: N lists x K responses of ~W words
(drawn from the tokenizer's whole-word vocabulary with Zipf frequencies) under an 8-word prompt
unique to each list. For each (N, W), each arm in its own process (`bench_common.run_worker`):

  bare     the tokenizer alone on the same (prompt, response) inputs (the set's first `--bare-seqs`):
           in chunks with its threads on: `backend_tokenizer.encode_batch_fast` (no offsets: its
           limit, the "bare" speed), `encode_batch` (with offsets) and the `transformers` call `tokenizer(a, b)`
  build    the runner's data work on an empty cache: preflight's validation pass, then the data
           module's setup, which builds the cache (parse + tokenise + write), then the first batch
  cached   the same on the built cache (every later run, trial and rank): preflight + setup + first
           batch = the data work before the first step (imports and the tokenizer load excluded)
  before   the same with the in-memory path this replaced (rankrm at `--before-ref`, from git, first
           on the child's PYTHONPATH), only where it fits in memory (`--before-max-tokens`; ~80 bytes a
           token: 400k x 4 x 150 words would need ~35 GB)
  cli      (`--cli`) `python -m rankrm.train data=jsonl ... trainer.max_steps=1` on the built cache,
           and on a 200-list set: peak RSS above model + optimizer = the difference
Figures: seconds (median of `--repeats` interleaved runs for cached/before), tokens/s, the peak RSS
of each process above its RSS after imports and the tokenizer (`data_rss_mb`), the cache's bytes on
disk, and one epoch of the train loader (every batch collated, no model: `epoch_s`).

The runs for the README (an idle machine; over an hour in all, most of it the 100k x 150-word
`before` arm and the 400k builds; ~8 GB of data and caches under --workdir), one size a command:

    for n in 4000 100000 400000; do
        python scripts/bench_data.py --sizes $n --words 25,150 --repeats 3 --cli \
            --workdir /tmp/bench_data --out scripts/results/bench_data_$n.json
    done

Smoke (tests): `python scripts/bench_data.py --quick --backbone tiny_bert`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_common as bc  # noqa: E402

BEFORE_REF = "500eac5"  # main before the token cache was merged (issue 14): the in-memory path
COLUMNS = [
    ("data", "data"),
    ("tokens", "tokens"),
    ("bare_tok_s", "bare tokenizer tok/s"),
    ("hf_tok_s", "transformers call tok/s"),
    ("build_tok_s", "cache build tok/s"),
    ("build_over_bare", "build / bare"),
    ("build_s", "build s (preflight + setup)"),
    ("build_rss_mb", "build data RSS MB"),
    ("cached_s", "cached: data s before step 1"),
    ("cached_rss_mb", "cached data RSS MB"),
    ("cached_epoch_s", "cached: epoch of batches s"),
    ("before_s", "before: data s before step 1"),
    ("before_rss_mb", "before data RSS MB"),
    ("before_epoch_s", "before: epoch of batches s"),
    ("cli_rss_above_mb", "CLI RSS above model+opt MB"),
    ("cache_mb", "cache MB"),
]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="4000,100000,400000", help="lists per data set, comma-separated")
    p.add_argument("--words", default="25,150", help="words per response, comma-separated")
    p.add_argument("--k", type=int, default=4, help="responses per list")
    p.add_argument("--backbone", default="minilm", help="backbone config (its tokenizer; the CLI arm: its model)")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the CLI arm")
    p.add_argument("--repeats", type=int, default=3, help="runs of the cached and before arms (median)")
    p.add_argument("--before-ref", default=BEFORE_REF, help="git revision of the in-memory path")
    p.add_argument("--before-max-tokens", type=float, default=120e6, help="skip `before` above this many tokens")
    p.add_argument("--bare-seqs", type=int, default=200_000, help="sequences the bare tokenizer is timed on")
    p.add_argument("--cli", action="store_true", help="also run the training CLI for its peak RSS")
    p.add_argument("--cli-only", action="store_true", help="re-measure only the CLI columns of --out's rows")
    p.add_argument("--workdir", default=None, help="data sets, caches, specs and logs (default: temp)")
    p.add_argument("--out", default=None, help="write results: *.json (data + tables) or *.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    args = p.parse_args(argv)
    if args.quick:
        args.sizes, args.words, args.repeats = "40", "12", 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_data_")).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    if args.cli_only:
        return remeasure_cli(args, workdir)
    before_tree = checkout(args.before_ref, workdir)
    info = bc.machine_info(args.threads)
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for words in (int(x) for x in args.words.split(",")):
            rows.append(measure(args, workdir, before_tree, n, words))
    bc.write_report(args.out, {"args": vars(args), "machine": info, "rows": rows}, report(args, info, rows))
    return 0


def report(args: argparse.Namespace, info: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    return "\n\n".join(
        [
            f"## Data at scale: lists x {args.k} responses, {args.backbone} tokenizer, data=jsonl (median of "
            f"{args.repeats} for cached/before)",
            bc.markdown_table(rows, COLUMNS),
            "data RSS: peak RSS of the process above its RSS after imports and the tokenizer; "
            "`-`: not run (the in-memory path does not fit, or no --cli)",
            bc.load_line(info),
        ]
    )


def remeasure_cli(args: argparse.Namespace, workdir: Path) -> int:
    """The CLI columns again for the rows of `--out`, on their data and caches under `--workdir`."""
    res = json.loads(Path(args.out).read_text())
    for row in res["rows"]:
        n, words = (
            int(x.replace(",", "")) for x in re.fullmatch(r"([\d,]+) x \d+ x ~(\d+) words", row["data"]).groups()
        )
        name = f"n{n}_w{words}"
        row.update(cli(args, workdir, workdir / f"{name}.jsonl", workdir / f"cache_{name}", words))
    res["cli_machine"] = bc.machine_info(args.threads)
    bc.write_report(args.out, res, report(argparse.Namespace(**res["args"]), res["machine"], res["rows"]))
    return 0


def checkout(ref: str, workdir: Path) -> Path:
    """`rankrm/` at `ref`, extracted from git (the in-memory path the cache replaced)."""
    tree = workdir / f"rankrm-{ref}"
    if not (tree / "rankrm" / "__init__.py").is_file():
        tree.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(
            ["git", "archive", ref, "rankrm", "hydra_plugins"], cwd=bc.REPO, capture_output=True, check=True
        )
        subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    return tree


def measure(args: argparse.Namespace, workdir: Path, before_tree: Path, n: int, words: int) -> dict[str, Any]:
    name = f"n{n}_w{words}"
    data = make_data(workdir / f"{name}.jsonl", n, args.k, words, args.backbone)
    cache_dir = workdir / f"cache_{name}"
    subprocess.run(["rm", "-rf", str(cache_dir)], check=True)
    spec = {"data": str(data), "backbone": args.backbone, "cache_dir": str(cache_dir), "bare_seqs": args.bare_seqs}
    bare = bc.run_worker("bench_data:bare_tokenizer", {**spec, "name": f"{name}_bare"}, workdir, args.threads)
    build = bc.run_worker("bench_data:data_work", {**spec, "name": f"{name}_build"}, workdir, args.threads)
    tokens = build["cache_tokens"]
    run_before = tokens <= args.before_max_tokens
    cached, before = [], []
    for r in range(args.repeats):  # interleaved, so a change of machine load hits both alike
        cached.append(bc.run_worker("bench_data:data_work", {**spec, "name": f"{name}_cached{r}"}, workdir, 1))
        if run_before:
            before.append(run_before_tree({**spec, "name": f"{name}_before{r}"}, workdir, before_tree))
    c = bc.median_runs(cached)
    row = {
        "data": f"{n:,} x {args.k} x ~{words} words",
        "tokens": tokens,
        "bare_tok_s": bare["tok_s"],
        "hf_tok_s": bare["hf_tok_s"],
        "offsets_tok_s": bare["offsets_tok_s"],
        "build_tok_s": build["build_tok_s"],
        "build_over_bare": build["build_tok_s"] / bare["tok_s"],
        "build_s": build["data_s"],
        "build_preflight_s": build["preflight_s"],
        "build_rss_mb": build["data_rss_mb"],
        "cached_s": c["data_s"],
        "cached_parts_s": {k: c[k] for k in ("preflight_s", "setup_s", "first_batch_s")},
        "cached_rss_mb": c["data_rss_mb"],
        "cached_epoch_s": c["epoch_s"],
        "cache_hit": c["cache_hit"],
        "cache_mb": build["cache_bytes"] / 2**20,
        "runs": {"bare": bare, "build": build, "cached": cached, "before": before},
    }
    if before:
        b = bc.median_runs(before)
        row.update(before_s=b["data_s"], before_rss_mb=b["data_rss_mb"], before_epoch_s=b["epoch_s"])
    if args.cli:
        row.update(cli(args, workdir, data, cache_dir, words))
    return row


def run_before_tree(spec: dict[str, Any], workdir: Path, tree: Path) -> dict[str, Any]:
    """`data_work` with the rankrm of `tree` imported (its own `rankrm.launch` serves the call)."""
    from rankrm.launch import child_env, run_function

    env = child_env(1, pythonpath=[tree, bc.SCRIPTS])
    result, fin = run_function(
        "bench_data:data_work", {**spec, "workdir": str(workdir)}, workdir, spec["name"], env=env, cwd=tree
    )
    return bc.with_process_figures(result, fin, spec["name"])


def make_data(path: Path, n: int, k: int, words: int, backbone: str) -> Path:
    """N list records of K responses (~`words` words each, +-30%) under an 8-word prompt; written once."""
    if path.is_file():
        return path
    import numpy as np

    vocab = sorted(w for w in _tokenizer(backbone).get_vocab() if w.isalpha() and w.isascii() and len(w) > 1)
    cdf = np.cumsum(1.0 / np.arange(1, len(vocab) + 1))  # Zipf: a text-like mix of frequent and rare words
    rng = np.random.default_rng(0)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as fh:
        for i in range(n):
            sizes = rng.integers(int(words * 0.7), int(words * 1.3) + 1, size=k)
            ids = np.searchsorted(cdf, rng.random(8 + int(sizes.sum())) * cdf[-1]).tolist()
            texts, at = [], 8
            for size in sizes.tolist():
                texts.append(" ".join(vocab[j] for j in ids[at : at + size]))
                at += size
            prompt = f"question {i}: " + " ".join(vocab[j] for j in ids[:8])
            fh.write(json.dumps({"prompt": prompt, "responses": texts}) + "\n")
    tmp.rename(path)
    return path


def _tokenizer(backbone: str) -> Any:
    from rankrm.backbones import load_tokenizer, resolve_name_or_path
    from rankrm.config import load_option

    cfg = load_option("backbone", backbone)
    return load_tokenizer(resolve_name_or_path(cfg.name_or_path), cfg)


def rss_mb(field: str = "VmRSS") -> float:
    """This process's resident memory now (VmRSS) or at its peak (VmHWM), in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def data_work(spec: dict[str, Any]) -> dict[str, Any]:
    """What `rankrm.train` does with the data before step 1 (preflight, setup, first batch), timed.

    Run under an older rankrm (`run_before_tree`), the same calls are the in-memory path's.
    """
    os.environ["RANKRM_DATA_CACHE_DIR"] = spec["cache_dir"]
    from hydra import compose, initialize_config_dir
    from hydra.utils import instantiate

    import rankrm.data.datamodule  # noqa: F401 -- its imports (Lightning, torch) are not data work
    from rankrm import CONF_DIR, preflight

    tok = _tokenizer(spec["backbone"])
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base=None):
        cfg = compose("train", overrides=["data=jsonl", f"data.source.path={spec['data']}"])
    base_rss = rss_mb()
    t0 = time.perf_counter()
    checked = preflight._read_data(cfg)
    t1 = time.perf_counter()
    dm = instantiate(cfg.data, tokenizer=tok, seed=cfg.seed, preread=checked)
    dm.setup("fit")
    t2 = time.perf_counter()
    loader = iter(dm.train_dataloader())
    batch = next(loader)
    t3 = time.perf_counter()
    n_batches = 1 + sum(1 for _ in loader)  # the rest of one epoch: what feeding the model costs per epoch
    t4 = time.perf_counter()
    cache = dm.stats.get("cache", {})
    built = not cache.get("hit", True)
    manifest = json.loads((Path(cache["dir"]) / "manifest.json").read_text()) if cache else {}
    status = dict(ln.split(":", 1) for ln in Path("/proc/self/status").read_text().splitlines() if ":" in ln)
    return {
        "preflight_s": t1 - t0,
        "setup_s": t2 - t1,
        "first_batch_s": t3 - t2,
        "data_s": t3 - t0,
        "epoch_s": t4 - t2,
        "epoch_batches": n_batches,
        "batch_shape": list(batch["input_ids"].shape),
        "cache_hit": cache.get("hit"),
        "cache_tokens": cache.get("tokens"),
        "cache_bytes": cache.get("bytes"),
        "build_tok_s": manifest["tokens"] / manifest["build_s"] if built else None,
        "train_lists": dm.stats["train"]["lists"],
        "data_rss_mb": rss_mb("VmHWM") - base_rss,
        "rss_anon_mb": int(status.get("RssAnon", "0 kB").split()[0]) / 1024,  # at the end: the data's own memory
        "rss_file_mb": int(status.get("RssFile", "0 kB").split()[0]) / 1024,  # mapped files (cache pages) + libraries
    }


def bare_tokenizer(spec: dict[str, Any]) -> dict[str, Any]:
    """The tokenizer alone on the inputs the cache build tokenises, chunk by chunk (only its calls timed)."""
    from collections import Counter

    from rankrm.data.sources import resolve
    from rankrm.data.tokencache import CHUNK_SEQS, chunks, tokenizer_threads
    from rankrm.data.validate import DropLog
    from rankrm.inputs import make_job

    tok = _tokenizer(spec["backbone"])
    backend = tok.backend_tokenizer
    backend.no_truncation()  # as the transformers call does before it encodes
    backend.no_padding()
    r = resolve({"reader": "jsonl", "path": spec["data"]})
    lists = ((rl, 0, -1) for rl, _ in r.parsing.stream(r.rows(DropLog())["train"], DropLog(), Counter()))
    calls = {  # the tokenizer's fastest call (no offsets), the one with offsets, and the transformers call
        "fast": lambda part: backend.encode_batch_fast([(j.a, j.b) for j in part]),
        "offsets": lambda part: backend.encode_batch([(j.a, j.b) for j in part]),
        "hf": lambda part: tok([j.a for j in part], [j.b for j in part], return_attention_mask=False),
    }
    timed, tokens = dict.fromkeys(calls, 0.0), dict.fromkeys(calls, 0)
    n_jobs = 0
    with tokenizer_threads():
        for n, chunk in enumerate(chunks(lists, 3 * CHUNK_SEQS)):
            jobs = [make_job(tok, rl, resp) for rl, _, _ in chunk for resp in rl.responses]
            for i, name in enumerate(calls):  # each call on its own third (a text seen before is not timed)
                part = jobs[len(jobs) * ((i + n) % 3) // 3 : len(jobs) * ((i + n) % 3 + 1) // 3]
                t0 = time.perf_counter()
                out = calls[name](part)
                timed[name] += time.perf_counter() - t0
                tokens[name] += sum(map(len, out["input_ids"] if name == "hf" else out))  # encodings: their lengths
            n_jobs += len(jobs)
            if n_jobs >= spec["bare_seqs"]:  # a rate: the set's start will do
                break
    rates = {f"{name}_tok_s": tokens[name] / t for name, t in timed.items()}
    return {"tokens": sum(tokens.values()), "tok_s": max(rates.values()), **rates, "sequences": n_jobs}


def cli(args: argparse.Namespace, workdir: Path, data: Path, cache_dir: Path, words: int) -> dict[str, Any]:
    """Peak RSS of the training CLI (1 step) on this set (cache built) and on a 200-list set of the same
    response lengths (the same activations: the difference is the data's memory)."""
    small = make_data(workdir / f"cli_small_w{words}.jsonl", 200, args.k, words, args.backbone)
    out = {}
    for key, path in (("cli_rss_mb", data), ("cli_small_rss_mb", small)):
        overrides = [f"backbone={args.backbone}", "data=jsonl", f"data.source.path={path}", "trainer.max_steps=1"]
        overrides += ["data.limit_val=64", "data.limit_test=64"]  # the runner's final validation: a few lists
        os.environ["RANKRM_DATA_CACHE_DIR"] = str(cache_dir)  # inherited by the child
        res = bc.run_rankrm_cli(f"cli_{path.stem}_{key}", overrides, workdir, args.threads)
        out[key] = res["peak_rss_mb"]
    out["cli_rss_above_mb"] = out["cli_rss_mb"] - out["cli_small_rss_mb"]
    return out


if __name__ == "__main__":
    sys.exit(main())
