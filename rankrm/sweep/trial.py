"""Run one sweep trial as a training subprocess (through `rankrm.launch`) and read what it left.

The child is `<command> <overrides> hydra.run.dir=<trial dir>`; it writes `<trial dir>/metrics.json`.
A subprocess isolates crashes (OOM, segfaults, a hung run) from the study, and the worker keeps
a heartbeat in the storage while it waits.
"""

from __future__ import annotations

import shlex
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrm.launch import launch, metric_value, read_metrics
from rankrm.sweep.space import Objective


@dataclass
class Outcome:
    """What a finished child left behind."""

    exit_code: int | None  # None: killed by the worker (timeout)
    metrics: dict[str, Any] = field(default_factory=dict)  # metrics.json, {} if absent
    error: str | None = None  # last stderr lines when the run failed
    seconds: float = 0.0


def run_child(
    cmd: Sequence[str],
    trial_dir: Path,
    timeout_s: float | None = None,
    beat: Callable[[], None] | None = None,
    beat_every_s: float = 30.0,
    env: Mapping[str, str] | None = None,
) -> Outcome:
    """Run `cmd` with stdout/stderr in `trial_dir`; call `beat()` every `beat_every_s` while it runs.
    `env`: the child's environment (None: this process's). On KeyboardInterrupt/SystemExit in the
    worker the child is stopped and the exception re-raised."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "metrics.json").unlink(missing_ok=True)  # a leftover (dir reused by a new study) must not count
    (trial_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
    fin = launch(
        cmd,
        trial_dir / "stdout.txt",
        stderr=trial_dir / "stderr.txt",
        env=env,
        timeout_s=timeout_s,
        heartbeat=beat,
        heartbeat_s=beat_every_s,
    )
    return Outcome(fin.exit_code, read_metrics(trial_dir), fin.error, fin.seconds)


def objective_values(metrics: dict[str, Any], objectives: Sequence[Objective]) -> tuple[list[float] | None, str | None]:
    """The objective values from metrics.json, or (None, why) when one is missing or not finite."""
    values = []
    for o in objectives:
        v = metric_value(metrics, o.metric)
        if v is None:
            return None, f"metrics.json has no finite {o.metric!r}"
        values.append(v)
    return values, None


def summary_attrs(metrics: dict[str, Any]) -> dict[str, Any]:
    """The small part of metrics.json kept on the trial (for the report): val metrics and time."""
    keep: dict[str, Any] = {}
    for stage in ("val", "test"):
        if isinstance(metrics.get(stage), dict):
            keep[stage] = {k: v for k, v in metrics[stage].items() if isinstance(v, (int, float))}
    if isinstance(metrics.get("wall_time_s"), (int, float)):
        keep["wall_time_s"] = metrics["wall_time_s"]
    return keep


def drop_checkpoints(trial_dir: Path) -> None:
    """Checkpoints of every trial would fill the disk (one backbone per trial); metrics stay."""
    shutil.rmtree(trial_dir / "checkpoints", ignore_errors=True)
