"""Shared helpers of the benchmark scripts (`bench_trl.py`, `bench_overhead.py`, `bench_ddp.py`).

Every measured system runs in its own child process; its peak RSS comes from `os.wait4`. A
spawned child's ru_maxrss starts from the parent's RSS (vfork + exec), so the orchestrating
parent imports nothing heavy (no torch, ~20 MB): the figure is then the child's own peak. Each
child also reports VmHWM (`peak_rss_rank_mb`, per address space). Torch/Lightning are imported
inside the helpers that need them, which only children call.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SCRIPTS = Path(__file__).resolve().parent
REPO = SCRIPTS.parent
DEFAULT_VADER_DIR = "/work/shared/data/vader-human-sentiment"
if str(REPO) not in sys.path:  # the scripts run from a checkout: use its rankrm, installed or not
    sys.path.insert(1, str(REPO))


def common_args(p: Any, train_help: str) -> None:
    """The options every benchmark script shares (data, sizes, output); each script adds its own."""
    p.add_argument("--vader-dir", default=None, help="VADER dir (default $RANKRM_VADER_DIR)")
    p.add_argument("--train-lists", type=int, default=200, help=train_help)
    p.add_argument("--max-length", type=int, default=128, help="data.max_length (max tokens per response)")
    p.add_argument("--backbone", default="minilm", help="backbone config (conf/backbone/)")
    p.add_argument("--min-gap", type=float, default=0.25, help="VADER: least gap between neighbours")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None, help="where lists, logs and run dirs go (default: temp)")
    p.add_argument("--out", default=None, help="write results: *.json (data + tables) or *.md")
    p.add_argument("--quick", action="store_true", help="tiny sizes for the smoke test")


def vader_dir(flag: str | None) -> str:
    """`--vader-dir`, else $RANKRM_VADER_DIR, else the shared copy on the dev machine."""
    return flag or os.environ.get("RANKRM_VADER_DIR") or DEFAULT_VADER_DIR


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


def child_env(threads: int) -> dict[str, str]:
    """Offline, `threads` intra-op threads, and `scripts/` importable (Hydra `_target_: bench_common...`)."""
    env = dict(os.environ)
    env.update(
        {
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
            "PYTHONUNBUFFERED": "1",
        }
    )
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(SCRIPTS), str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


@dataclass
class ChildRun:
    returncode: int
    wall_s: float
    peak_rss_mb: float  # max RSS of the child and of any process it waited for (DDP ranks)
    log: Path


def run_child(cmd: Sequence[str], log: Path, env: dict[str, str], timeout_s: float = 3600) -> ChildRun:
    """Run `cmd` to completion, output to `log` (no pipe to drain while we block in wait4).

    The child leads its own process group, so a timeout or Ctrl-C ends it with its DDP ranks.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            list(cmd), stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO, start_new_session=True
        )
        try:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            while not pid:  # poll, so a hung child cannot hang the benchmark
                if time.perf_counter() - start > timeout_s:
                    os.killpg(proc.pid, signal.SIGKILL)
                time.sleep(0.05)
                pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        except BaseException:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return ChildRun(proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024, log)  # KiB on Linux


def run_worker(script: str, spec: dict[str, Any], workdir: Path, threads: int) -> dict[str, Any]:
    """Run `python scripts/<script> --worker spec.json` in a child; returns its result + wall/RSS."""
    name = spec["name"]
    spec_path, result_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec = {**spec, "result": str(result_path), "workdir": str(workdir)}
    spec_path.write_text(json.dumps(spec, indent=2))
    result_path.unlink(missing_ok=True)
    run = run_child(
        [sys.executable, str(SCRIPTS / script), "--worker", str(spec_path)], workdir / f"{name}.log", child_env(threads)
    )
    return read_result(run, result_path, name)


def serve_worker(spec_path: str, work: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """The child side of `run_worker`: read the spec, run `work(spec)`, write its result JSON."""
    spec = json.loads(Path(spec_path).read_text())
    Path(spec["result"]).write_text(json.dumps(work(spec), indent=2))
    return 0


def read_result(run: ChildRun, path: Path, name: str) -> dict[str, Any]:
    """The JSON a child wrote, plus its wall time and peak RSS; a failed child shows its log's end."""
    if run.returncode != 0 or not path.is_file():
        tail = run.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{name} failed (exit {run.returncode}); log {run.log}:\n{tail}")
    result = json.loads(path.read_text())
    result.update(process_wall_s=round(run.wall_s, 2), peak_rss_mb=round(run.peak_rss_mb, 1))
    return result


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


def read_lists(path: str | Path) -> list[Any]:
    """RankedLists from a list JSONL, through rankrm's own reader."""
    from rankrm.data.readers import read_jsonl
    from rankrm.data.validate import DropLog

    return read_jsonl(path, DropLog()).lists


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
    # val from its own stream: the same val lists whatever n_train (the train draw is as before)
    val = random.Random(f"bench:{seed}:{k}:val").sample(splits["val"], n_val)
    chosen = {"train": rng.sample(splits["train"], n_train), "val": val}
    outdir.mkdir(parents=True, exist_ok=True)
    for split, lists in chosen.items():  # rankrm's list JSONL: responses best first + scores
        rows = [json.dumps({"responses": list(rl.responses), "scores": list(rl.labels)}) for rl in lists]
        (outdir / f"{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return {"train": str(outdir / "train.jsonl"), "val": str(outdir / "val.jsonl"), "test": str(outdir / "val.jsonl")}


# ---------------------------------------------------------------- measurement inside a worker


class PaddingCounter:
    """Real vs padded token slots over the attention masks it is fed."""

    def __init__(self) -> None:
        self.real, self.total, self.batches = 0, 0, 0

    def count(self, attention_mask: Any) -> None:
        self.real += int(attention_mask.sum())
        self.total += attention_mask.numel()
        self.batches += 1

    @property
    def pad_share(self) -> float:
        return 1.0 - self.real / self.total if self.total else float("nan")


def evaluate_lists(score: Callable[[list[Any]], Any], lists: Sequence[Any], batch_lists: int = 16) -> dict[str, float]:
    """rankrm's metrics of `score(lists) -> (N,)` (every response, row-major), chunk by chunk."""
    import torch

    from rankrm.metrics import ranking_metrics

    k = max(rl.k for rl in lists)
    mask = torch.tensor([[i < rl.k for i in range(k)] for rl in lists])  # (B, K)
    labels = torch.tensor([list(rl.labels) + [0.0] * (k - rl.k) for rl in lists])  # (B, K)
    with torch.no_grad():
        scores = torch.cat(
            [score(list(lists[i : i + batch_lists])).float() for i in range(0, len(lists), batch_lists)]
        )  # (N,)
    rewards = torch.zeros(len(lists), k).masked_scatter(mask, scores)  # (B, K)
    return {name: float(v) for name, v in ranking_metrics(rewards, labels, mask).items()}


def vm_hwm_mb() -> float:
    """This process's peak RSS (VmHWM: per address space, so reset by exec, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def rankrm_val_scorer(module: Any, tokenizer: Any, max_length: int | None) -> Callable[[list[Any]], Any]:
    """Score whole val lists the way rankrm's data module feeds them (truncating, never dropping)."""
    from rankrm.data.collate import RankCollator
    from rankrm.data.tokenize import encode_lists

    collate = RankCollator(tokenizer.pad_token_id, getattr(tokenizer, "padding_side", "right"))

    def score_lists(lists: list[Any]) -> Any:
        encoded, _ = encode_lists(tokenizer, lists, max_length, overlong="truncate")
        batch = collate(encoded)
        return module.model(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))  # (N,)

    return score_lists


class FitStats:
    """What a training run saw and how long it took; fed by the probe's hooks (plain Python)."""

    def __init__(self) -> None:
        self.built = self.fit_start = self.step_start = time.perf_counter()
        self.pad, self.step_s = PaddingCounter(), []
        self.examples = self.pairs = self.sequences = 0

    def batch_start(self, batch: dict) -> None:
        from rankrm.pairs import pair_mask

        self.step_start = time.perf_counter()
        self.pad.count(batch["attention_mask"])
        self.examples += batch["mask"].shape[0]
        self.sequences += batch["input_ids"].shape[0]
        self.pairs += int(pair_mask(batch["labels"], batch["mask"]).sum())

    def result(self, trainer: Any) -> dict[str, Any]:
        end, train = time.perf_counter(), trainer.datamodule.stats.get("train", {})
        return {
            "train_s": end - self.built,
            "fit_loop_s": end - self.fit_start,
            "examples": self.examples,
            "pairs": self.pairs,
            "sequences": self.sequences,
            "pad_share": self.pad.pad_share,
            "batches": self.pad.batches,
            "steps": trainer.global_step,
            "first_step_s": self.step_s[0] if self.step_s else None,
            "median_step_s": statistics.median(self.step_s) if self.step_s else None,
            "world_size": trainer.world_size,
            "rank": trainer.global_rank,
            "train_lists": train.get("lists"),
            "overlong_filtered": train.get("overlong_filtered"),
            "peak_rss_rank_mb": vm_hwm_mb(),
        }


def make_probe(out: str, val_file: str | None = None, max_length: int | None = None) -> Any:
    """Hydra `_target_` for a Lightning callback that times the fit and counts what it saw.

    Built when the runner instantiates callbacks, i.e. after the model, right before the
    Trainer: the window [probe built, train end] covers Trainer construction, data setup
    (reading + tokenising) and the fit loop. On train end, rank 0 scores `val_file` (if given)
    and writes `out`; rank r > 0 writes `out.rank<r>` (DDP). Lightning is imported here, not at
    the top: the orchestrating parent must stay small (see the module docstring).
    """
    import lightning.pytorch as pl

    stats = FitStats()

    class BenchProbe(pl.Callback):
        def on_train_start(self, trainer: Any, pl_module: Any) -> None:
            stats.fit_start = time.perf_counter()

        def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
            stats.batch_start(batch)

        def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
            stats.step_s.append(time.perf_counter() - stats.step_start)

        def on_train_end(self, trainer: Any, pl_module: Any) -> None:
            res = stats.result(trainer)
            if val_file and trainer.is_global_zero:
                pl_module.eval()
                scorer = rankrm_val_scorer(pl_module, trainer.datamodule.tokenizer, max_length)
                res.update({f"val_{k}": v for k, v in evaluate_lists(scorer, read_lists(val_file)).items()})
                pl_module.train()
            Path(out if trainer.is_global_zero else f"{out}.rank{trainer.global_rank}").write_text(json.dumps(res))

    return BenchProbe()


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
    run_dir = workdir / f"{name}_run"
    cmd = [
        sys.executable,
        "-m",
        "rankrm.train",
        *overrides,
        "callbacks.model_checkpoint=null",
        "callbacks.progress_bar=null",
        "++trainer.enable_progress_bar=false",
        "++trainer.enable_checkpointing=false",
        "trainer.check_val_every_n_epoch=1000",
        "test=false",
        "export=false",
        f"threads={threads}",
        f"hydra.run.dir={run_dir}",
        "+callbacks.bench_probe._target_=bench_common.make_probe",
        f"+callbacks.bench_probe.out={probe}",
    ]
    if val_file:
        cmd += [f"+callbacks.bench_probe.val_file={val_file}", f"+callbacks.bench_probe.max_length={max_length}"]
    return read_result(run_child(cmd, workdir / f"{name}.log", child_env(threads)), probe, name)
