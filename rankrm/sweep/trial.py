"""Run one sweep trial as a training subprocess and turn its outcome into an Optuna state.

The child is `<command> <overrides> hydra.run.dir=<trial dir>`; it writes `<trial dir>/metrics.json`.
A subprocess isolates crashes (OOM, segfaults, a hung run) from the study, and the worker keeps
a heartbeat in the storage while it waits.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankrm.sweep.space import Objective, metric_value

log = logging.getLogger("rankrm.sweep")
_PR_SET_PDEATHSIG = 1
_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR"  # Hydra's last line on any error: noise here


def die_with_parent() -> None:
    """Linux: SIGTERM this process when its parent dies, so a killed sweep leaves no orphan training."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: a killed sweep may leave its current trial running to the end


def default_command() -> list[str]:
    return [sys.executable, "-m", "rankrm.train"]


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
    tail_lines: int = 20,
) -> Outcome:
    """Run `cmd` with stdout/stderr in `trial_dir`; call `beat()` every `beat_every_s` while it runs.
    On KeyboardInterrupt/SystemExit in the worker the child is terminated and the exception re-raised."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    (trial_dir / "metrics.json").unlink(missing_ok=True)  # a leftover (dir reused by a new study) must not count
    (trial_dir / "command.txt").write_text(shlex.join(cmd) + "\n")
    start = time.monotonic()
    with open(trial_dir / "stdout.txt", "wb") as out, open(trial_dir / "stderr.txt", "wb") as err:
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            preexec_fn=die_with_parent if os.name == "posix" else None,
        )
        try:
            code = _wait(proc, start, timeout_s, beat, beat_every_s)
        except BaseException:
            _stop(proc)
            raise
    seconds = time.monotonic() - start
    metrics = _read_metrics(trial_dir / "metrics.json")
    error = None
    if code is None:
        error = f"timeout: killed after {timeout_s:g} s"
    elif code != 0:
        error = tail(trial_dir / "stderr.txt", tail_lines) or f"exit code {code}, no stderr"
    return Outcome(code, metrics, error, seconds)


def _wait(
    proc: subprocess.Popen, start: float, timeout_s: float | None, beat: Callable[[], None] | None, beat_every_s: float
) -> int | None:
    """Poll the child; None means it hit the timeout and was stopped."""
    last_beat = time.monotonic()
    if beat is not None:
        beat()
    while True:
        try:
            return proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass
        now = time.monotonic()
        if timeout_s is not None and now - start > timeout_s:
            _stop(proc)
            return None
        if beat is not None and now - last_beat >= beat_every_s:
            beat()
            last_beat = now


def _stop(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL if the child does not exit within `grace_s`."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _read_metrics(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def tail(path: Path, n: int, max_chars: int = 4000) -> str:
    """The last `n` non-empty lines of a text file (at most `max_chars`), '' if none."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 64 * 1024))  # a traceback's end fits; avoids reading huge logs
            text = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    lines = [
        ln.rstrip() for ln in text.replace("\r", "\n").splitlines() if ln.strip() and not ln.startswith(_HYDRA_HINT)
    ]
    return "\n".join(lines[-n:])[-max_chars:]


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
