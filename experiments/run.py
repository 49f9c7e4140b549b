"""Run one paper ablation: every arm x seed through the real CLI (`python -m rankrm.train`).

    python experiments/run.py <ablation> [--seeds 0 1 2] [--budget quick|full] [--arms A B] [--threads 2]
    python experiments/run.py <ablation> --jobs 2 --threads 1    # two runs at a time (a 2-core CPU)
    python experiments/run.py <ablation> --smoke --root /tmp/x --set data.source.data_dir=/tiny/vader

Each run goes to `<root>/runs/<ablation>/<budget>/<arm>/seed<s>/` (export=false: no model dir) and
its compact record (metrics.json + the per-epoch val curve + the exact command) to
`<root>/results/<ablation>/<budget>/<arm>/seed<s>.json`, the only thing that is committed.
Runs start through `rankrm.launch`: offline, with $RANKRM_DATA_DIR (default `data` here) passed on
as an absolute path, so `${paths.data_dir}` in a config is the same folder for every run.
Resumable: a run whose result exists is skipped; a run whose metrics.json exists is only collected.
A collected run's checkpoints/ is deleted (~0.5 GB each) unless --keep-checkpoints.
`--smoke` checks a config end to end in seconds: tiny random backbone, a few lists, 2 steps.
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import EXP_DIR, ROOT, Spec, load_spec, result_path

from rankrm.launch import child_env, launch, runner_command
from rankrm.overrides import merge_overrides, override_key

# Overrides that keep a run's log readable and its dir small.
QUIET = ["export=false", "++callbacks.progress_bar=null", "++trainer.enable_progress_bar=false"]
# --smoke: pretrained backbones -> tiny random ones of the same kind (encoder / decoder).
SMOKE_BACKBONE = {
    "minilm": "tiny_bert",
    "bert": "tiny_bert",
    "ernie": "tiny_ernie",
    "smollm2": "tiny_qwen",
    "qwen": "tiny_qwen",
    "e5_multilingual": "tiny_bert",
}
SMOKE_DEFAULT_BACKBONE = ["backbone=tiny_bert"]  # before the arm's overrides: an arm's own backbone wins
SMOKE = [
    "trainer.max_steps=2",
    "data.limit_train=8",
    "data.limit_val=4",
    "data.limit_test=4",
    "++trainer.limit_val_batches=2",
    "++trainer.limit_test_batches=2",
]  # after them: tiny whatever the arm says


@dataclass(frozen=True)
class Run:
    ablation: str
    budget: str
    arm: str
    seed: int
    overrides: list[str]  # everything after `experiment=<ablation>`
    run_dir: Path
    result: Path


def smoke_arm(overrides: list[str]) -> list[str]:
    """An arm's `backbone=<pretrained>` becomes its tiny stand-in."""
    out = []
    for o in overrides:
        key, _, value = o.partition("=")
        out.append(f"{key}={SMOKE_BACKBONE.get(value, value)}" if override_key(o) == "backbone" else o)
    return out


def plan(
    spec: Spec,
    budget: str,
    seeds: list[int],
    arms: list[str] | None,
    root: Path,
    smoke: bool = False,
    extra: tuple[str, ...] = (),
) -> list[Run]:
    """All arm x seed runs of one ablation, in arm order then seed order."""
    if budget not in spec.budgets:
        raise SystemExit(f"{spec.name}: unknown budget {budget!r} (have {', '.join(spec.budgets)})")
    unknown = sorted(set(arms or []) - set(spec.arms))
    if unknown:
        raise SystemExit(f"{spec.name}: unknown arms {unknown} (have {', '.join(spec.arms)})")
    chosen = arms or [a for a in spec.arms if budget == "full" or a not in spec.gpu_arms]
    runs = []
    for arm in chosen:
        arm_ov = spec.arm_overrides(arm, budget)
        arm_ov = smoke_arm(arm_ov) if smoke else arm_ov
        for seed in seeds:
            ov = merge_overrides(
                spec.budgets[budget],
                SMOKE_DEFAULT_BACKBONE if smoke else [],
                arm_ov,
                SMOKE if smoke else [],
                list(extra),
                [f"seed={seed}"],
            )
            runs.append(
                Run(
                    spec.name,
                    budget,
                    arm,
                    seed,
                    ov,
                    root / "runs" / spec.name / budget / arm / f"seed{seed}",
                    result_path(root / "results", spec.name, budget, arm, seed),
                )
            )
    return runs


def command(run: Run, threads: int) -> list[str]:
    """The training command of one run (the run dir last)."""
    return runner_command([f"experiment={run.ablation}", *run.overrides, f"threads={threads}", *QUIET], run.run_dir)


def val_curve(csv_path: Path, epochs: int) -> list[dict[str, float]]:
    """Per-epoch validation rows of the Lightning CSV log (the re-validation of the best checkpoint
    after training is logged at epoch == `epochs` and dropped)."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/pair_acc")]
    during_fit = [r for r in rows if int(r["epoch"]) < epochs] or rows[:1]
    return [
        {
            "epoch": int(r["epoch"]),
            "step": int(r["step"]),
            **{k.split("/", 1)[1]: float(v) for k, v in r.items() if k.startswith("val/") and v},
        }
        for r in during_fit
    ]


def code_version() -> dict[str, Any]:
    """The commit the run's code came from and the files that differed from it (other people edit
    the same tree while ablations run, so a result is only reproducible from both)."""

    def git(*args: str) -> str:
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.rstrip("\n") if r.returncode == 0 else ""

    dirty = git("status", "--porcelain", "--", "rankrm", "pyproject.toml").splitlines()
    return {"commit": git("rev-parse", "HEAD") or None, "dirty": sorted(line[3:] for line in dirty)}


def collect(run: Run, cmd: list[str], smoke: bool) -> dict[str, Any]:
    """metrics.json + val curve + provenance -> the committed result record."""
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    metrics.pop("best_checkpoint", None)  # a path into the uncommitted run dir
    shown = ["python", *cmd[1:-1]]  # the interpreter path and the run dir are machine-specific
    return {
        "ablation": run.ablation,
        "budget": run.budget,
        "arm": run.arm,
        "seed": run.seed,
        "smoke": smoke,
        "overrides": run.overrides,
        "command": " ".join(shown),
        "code": code_version(),
        "metrics": metrics,
        "val_curve": val_curve(run.run_dir / "csv" / "metrics.csv", metrics["train"]["epochs"]),
    }


def execute(run: Run, threads: int, smoke: bool, keep_checkpoints: bool = False) -> bool:
    """Run (or only collect) one arm x seed; True if its result now exists."""
    if run.result.is_file():
        print(f"skip   {run.arm} seed{run.seed}: {run.result.relative_to(run.result.parents[3])} exists")
        return True
    cmd = command(run, threads)
    if not (run.run_dir / "metrics.json").is_file():
        run.run_dir.mkdir(parents=True, exist_ok=True)
        print(f"run    {run.arm} seed{run.seed} ...", flush=True)
        fin = launch(cmd, run.run_dir / "run.log", env=child_env(), cwd=ROOT)
        if not fin.ok or not (run.run_dir / "metrics.json").is_file():
            print(f"FAILED {run.arm} seed{run.seed} (exit {fin.exit_code}): see {fin.log}")
            return False
        print(f"done   {run.arm} seed{run.seed} in {fin.seconds:.0f} s", flush=True)
    run.result.parent.mkdir(parents=True, exist_ok=True)
    run.result.write_text(json.dumps(collect(run, cmd, smoke), indent=1, sort_keys=True) + "\n")
    if not keep_checkpoints:  # ~0.5 GB per full fine-tune (weights + Adam state); the record has the numbers
        shutil.rmtree(run.run_dir / "checkpoints", ignore_errors=True)
    return True


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("ablation", help="name of a conf/experiment/*.yaml")
    p.add_argument("--seeds", type=int, nargs="+", help="default: the config's ablation.seeds")
    p.add_argument("--budget", default="quick", help="a key of the config's ablation.budgets (default quick)")
    p.add_argument("--arms", nargs="+", help="only these arms (default: all; gpu_arms only with --budget full)")
    p.add_argument("--threads", type=int, default=2, help="torch threads per run")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs at a time (mind memory: one SmolLM2 fine-tune at 192 tokens peaks at ~14 GB, "
        "~6.5 GB with backbone.gradient_checkpointing=true)",
    )
    p.add_argument("--smoke", action="store_true", help="tiny backbone, tiny data, 2 steps: checks the config runs")
    p.add_argument("--root", type=Path, default=EXP_DIR, help="runs/ and results/ go under it")
    p.add_argument(
        "--keep-checkpoints", action="store_true", help="keep each run's checkpoints/ (deleted once collected)"
    )
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra overrides for every run")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.ablation)
    runs = plan(
        spec,
        args.budget,
        args.seeds or spec.seeds,
        args.arms,
        args.root.resolve(),
        smoke=args.smoke,
        extra=tuple(args.set),
    )
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:  # each run is its own process
        ok = list(pool.map(lambda r: execute(r, args.threads, args.smoke, args.keep_checkpoints), runs))
    print(f"{sum(ok)}/{len(ok)} runs of {spec.name} ({args.budget}) have results")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
