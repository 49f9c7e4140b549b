"""Shared helpers of the benchmark scripts, parent side: options, launching the measured systems, tables.

The child side (what runs inside a measured process) is `bench_measure.py`.

Every measured system runs in its own child process, started by `rankrm.launch`; its peak RSS
comes from `os.wait4`. A child's ru_maxrss starts from the parent's RSS (fork + exec), so the
orchestrating parent imports nothing heavy (no torch, ~20 MB): the figure is then the child's own
peak. Each child also reports VmHWM (`peak_rss_rank_mb`, per address space). Torch/Lightning are
imported inside the helpers that need them, which only children call.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rankrm.launch import Finished, child_env, launch, read_json, run_function, runner_command
from rankrm.overrides import to_overrides
from rankrm.paths import data_root

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
VADER_FOLDER = "vader-human-sentiment"  # the VADER files' folder under the data root ($RANKRM_DATA_DIR)
CHILD_TIMEOUT_S = 3600  # a hung system fails its benchmark instead of hanging it


# The options of the benchmark scripts: flag -> (type, default, help). A script takes the ones it
# needs with `add_options`, giving its own default, or (default, help), where it differs.
OPTIONS: dict[str, tuple[Callable[[str], Any], Any, str]] = {
    "vader_dir": (str, None, f"VADER dir (default $RANKRM_VADER_DIR, else $RANKRM_DATA_DIR/{VADER_FOLDER})"),
    "train_lists": (int, 200, "training lists (one epoch)"),
    "val_lists": (int, 100, "held-out lists"),
    "min_gap": (float, 0.25, "VADER: least gap between neighbours"),
    "k": (int, 4, "list length K"),
    "lists_per_batch": (int, 8, "data.batch_size"),
    "max_length": (int, 128, "data.max_length (max tokens per response)"),
    "backbone": (str, "minilm", "backbone config (conf/backbone/)"),
    "loss": (str, "ranklist", "loss config (conf/loss/)"),
    "threads": (int, 2, "torch threads"),
    "repeats": (int, 1, "runs per configuration; medians reported"),
    "seed": (int, 0, "seed of the data sample, the model's init and the batch order"),
    "workdir": (str, None, "where lists, logs and run dirs go (default: temp)"),
    "out": (str, None, "write results: *.json (data + tables) or *.md"),
}
VADER_OPTIONS = "vader_dir train_lists min_gap max_length backbone seed workdir out"  # the scripts on VADER lists


def parser(doc: str, names: str, **changed: Any) -> argparse.ArgumentParser:
    """A parser described by the script's docstring, with `--quick` and `--<name>` for each of `names`
    (space-separated) and of `changed` (those with the script's default, or (default, help))."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    for name in dict.fromkeys([*names.split(), *changed]):
        kind, default, text = OPTIONS[name]
        if name in changed:
            default, text = changed[name] if isinstance(changed[name], tuple) else (changed[name], text)
        p.add_argument("--" + name.replace("_", "-"), type=kind, default=default, help=text)
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")
    return p


def vader_dir(flag: str | None) -> str | None:
    """`--vader-dir`, else $RANKRM_VADER_DIR, else `<data root>/vader-human-sentiment` if it exists, else
    None: rankrm's own lookup then takes the user cache (fetched once from PyPI if empty)."""
    in_root = data_root() / VADER_FOLDER
    return flag or os.environ.get("RANKRM_VADER_DIR") or (str(in_root) if in_root.is_dir() else None)


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures depend on; the load average says how noisy they are (a shared machine)."""
    return {
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "cpu_count": os.cpu_count(),
        "threads": threads,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "time": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def bench_env(threads: int) -> dict[str, str]:
    """Offline, `threads` intra-op threads, and `scripts/` importable in the child (worker functions,
    Hydra `_target_: bench_measure.make_probe`)."""
    return child_env(threads, pythonpath=[SCRIPTS])


def run_worker(target: str, spec: dict[str, Any], workdir: Path, threads: int) -> dict[str, Any]:
    """Run `target(spec)` (`"bench_x:function"`) in a child; returns its result + wall/RSS."""
    result, fin = run_function(
        target,
        {**spec, "workdir": str(workdir)},
        workdir,
        spec["name"],
        env=bench_env(threads),
        cwd=REPO,
        timeout_s=CHILD_TIMEOUT_S,
    )
    return with_process_figures(result, fin, spec["name"])


def with_process_figures(result: dict[str, Any] | None, fin: Finished, name: str) -> dict[str, Any]:
    """The JSON a child wrote, plus its wall time and peak RSS; a failed child shows its log's end."""
    if result is None or not fin.ok:
        raise RuntimeError(f"{name} failed (exit {fin.exit_code}); log {fin.log}:\n{fin.error}")
    return {**result, "process_wall_s": round(fin.seconds, 2), "peak_rss_mb": round(fin.peak_rss_mb, 1)}


def data_overrides(
    backbone: str, loss: str, lists: dict[str, str], seed: int, batch_size: int, max_length: int
) -> list[str]:
    """The runner overrides every benchmark shares: its lists as `data=jsonl`, batch, length, seed."""
    return [
        f"backbone={backbone}",
        f"loss={loss}",
        "data=jsonl",
        f"seed={seed}",
        *(f"data.source.{split}={lists[split]}" for split in ("train", "val", "test")),
        f"data.batch_size={batch_size}",
        f"data.max_length={max_length}",
    ]


def median_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Median of every numeric field over repeats; other fields from the first run."""
    out = dict(runs[0])
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            vals = [r[key] for r in runs if isinstance(r.get(key), (int, float))]
            out[key] = statistics.median(vals) if vals else value
    out["repeats"] = len(runs)
    return out


def fmt(value: Any) -> str:
    if isinstance(value, float) and math.isfinite(value):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:.0f}"
    return "-" if value is None else str(value)


def markdown_table(rows: Iterable[dict[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    """`columns` = [(key, header)]; one markdown row per dict."""
    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_report(path: str | None, payload: dict[str, Any], markdown: str) -> None:
    """Print the markdown; write `path` as JSON (payload + markdown) or, for *.md, the markdown."""
    print(markdown, flush=True)
    if not path:
        return
    from rankrm.io import atomic_write_json, atomic_write_text  # light: json/os only

    if str(path).endswith(".md"):
        atomic_write_text(path, markdown + "\n")
    else:
        atomic_write_json(path, {**payload, "markdown": markdown})


def load_line(info: dict[str, Any]) -> str:
    la = info["loadavg_1_5_15"]
    return (
        f"machine: {info['cpu_count']} cores, {info['threads']} torch threads, load average "
        f"{la[0]}/{la[1]}/{la[2]} (1/5/15 min) at {info['time']}; figures measured under load are noisy"
    )


# ---------------------------------------------------------------- data: the same lists for every system


def prepare_vader_lists(
    data_dir: str, k: int, n_train: int, n_val: int, seed: int, outdir: Path, min_gap: float
) -> dict[str, str]:
    """Build K-way VADER lists with rankrm's reader; keep a seeded sample of n_train / n_val.

    The reader emits lists domain by domain, so the first N would all be tweets: sample instead.
    Returns {"train": path, "val": path, "test": path} (test = val: rankrm needs a test split
    and must not carve one out of train; the benchmark never evaluates it).
    """
    import random

    from rankrm.data.vader import load_vader
    from rankrm.data.validate import DropLog

    splits, _ = load_vader(DropLog(), seed, data_dir, k=k, min_gap=min_gap)
    if len(splits["train"]) < n_train or len(splits["val"]) < n_val:
        raise SystemExit(
            f"VADER at K={k}, min_gap={min_gap} has {len(splits['train'])} train / "
            f"{len(splits['val'])} val lists; asked for {n_train} / {n_val}"
        )
    rng = random.Random(f"bench:{seed}:{k}")
    chosen = {"train": rng.sample(splits["train"], n_train), "val": rng.sample(splits["val"], n_val)}
    outdir.mkdir(parents=True, exist_ok=True)
    for split, lists in chosen.items():  # rankrm's list JSONL: responses best first + scores
        rows = [json.dumps({"responses": list(rl.responses), "scores": list(rl.labels)}) for rl in lists]
        (outdir / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"train": str(outdir / "train.jsonl"), "val": str(outdir / "val.jsonl"), "test": str(outdir / "val.jsonl")}


def run_rankrm_cli(
    name: str,
    overrides: Sequence[str],
    workdir: Path,
    threads: int,
    val_file: str | None = None,
    max_length: int | None = None,
) -> dict[str, Any]:
    """`python -m rankrm.train <overrides>` with the probe; returns the probe's JSON + wall/RSS.

    Checkpoints, export, test and the progress bar are off (no side of a benchmark does them);
    validation inside fit is off (every system is scored afterwards by the same code); the
    runner's final validation still runs after the window (it counts in process_wall_s only).
    """
    probe = workdir / f"{name}.probe.json"
    probe.unlink(missing_ok=True)
    probe_args: dict[str, Any] = {"_target_": "bench_measure.make_probe", "out": str(probe)}
    if val_file:
        probe_args.update(val_file=val_file, max_length=max_length)
    quiet = [
        "callbacks.model_checkpoint=null",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_checkpointing=false",
        "trainer.check_val_every_n_epoch=1000",
        "test=false",
        "export=false",
    ]
    probe_overrides = to_overrides({f"callbacks.bench_probe.{k}": v for k, v in probe_args.items()})
    cmd = runner_command([*overrides, *quiet, f"threads={threads}", *probe_overrides], workdir / f"{name}_run")
    fin = launch(
        cmd, workdir / f"{name}.log", env=bench_env(threads), cwd=REPO, timeout_s=CHILD_TIMEOUT_S, new_session=True
    )
    return with_process_figures(read_json(probe) if fin.ok else None, fin, name)
