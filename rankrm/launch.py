"""The one launcher: a rankrm runner, or a worker function, as a child process (sweeps, ablations, benchmarks).

    cmd = runner_command(["loss=listnet", "threads=2"], run_dir)   # python -m rankrm.train ... hydra.run.dir=
    fin = launch(cmd, run_dir / "stdout.txt", stderr=run_dir / "stderr.txt", timeout_s=3600, heartbeat=beat)
    fin.ok, fin.error, fin.seconds, fin.peak_rss_mb
    metric_value(read_metrics(run_dir), "val/pair_acc")             # <run dir>/metrics.json -> 0.81

    result, fin = run_function("bench_memory:train_steps", spec, workdir, "ckpt_on", env=child_env(threads=2))

A child isolates crashes (OOM, segfaults, a hung run) from the caller. Its output goes to files
(no pipe to drain while the caller waits). It is stopped (SIGTERM, SIGKILL after a grace period)
at the timeout and when the caller is interrupted, and on Linux it gets SIGTERM when the thread
that started it dies, so a killed sweep leaves no orphan training. Its peak RSS comes from
wait4: the maximum of the child and of the processes it waited for (DDP ranks); a forked child
counts from its parent's RSS, so a caller that reports the figure should stay light.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import importlib
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankrm.overrides import hydra_value
from rankrm.paths import DATA_DIR_ENV, data_root

_PR_SET_PDEATHSIG = 1
_POLL_S = 0.05  # how often the child is polled: the resolution of `seconds` and of the heartbeat/timeout
_MAXRSS_PER_MB = 1024 * 1024 if sys.platform == "darwin" else 1024  # ru_maxrss is in bytes on macOS, KiB elsewhere
_HYDRA_HINT = "Set the environment variable HYDRA_FULL_ERROR"  # Hydra's last line on any error: noise here


def _load_prctl() -> Callable[..., int] | None:
    """libc's prctl, looked up in the parent: between fork and exec the child only calls it."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent(parent: int | None = None) -> None:
    """Linux: SIGTERM this process when the thread that started it dies. `parent`: the pid that
    started it; if that one is already gone (it died before this call), stop now. Elsewhere a
    no-op: an orphaned child runs to its end."""
    if _PRCTL is None:
        return
    _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if parent is not None and os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


@dataclass
class Finished:
    """How a child ended."""

    exit_code: int | None  # None: stopped at the timeout; negative: killed by that signal
    seconds: float
    peak_rss_mb: float  # NaN when unknown (stopped, or no wait4 on this platform)
    log: Path  # its stdout (and stderr, unless that had a file of its own)
    error: str | None = None  # None after exit 0; else the timeout, or the last lines of stderr

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def runner_command(
    overrides: Sequence[str], run_dir: str | Path, runner: str = "train", command: Sequence[str] | None = None
) -> list[str]:
    """`python -m rankrm.<runner> <overrides> hydra.run.dir=<run_dir>`; `command` replaces the runner part."""
    base = list(command) if command else [sys.executable, "-m", f"rankrm.{runner}"]
    return [*base, *overrides, f"hydra.run.dir={hydra_value(str(run_dir))}"]


def child_env(threads: int | None = None, pythonpath: Sequence[str | Path] = ()) -> dict[str, str]:
    """This process's environment for an offline run: no hub, tokenizers single-threaded, output
    unbuffered, the data root absolute; with `threads`, OpenMP/MKL pools of that size; `pythonpath`
    first on the child's import path (for `module:function` targets and Hydra `_target_`s)."""
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    env.update(TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1")
    env[DATA_DIR_ENV] = str(data_root())
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([*map(str, pythonpath), *filter(None, [env.get("PYTHONPATH")])])
    return env


def launch(
    cmd: Sequence[str],
    log: Path,
    *,
    stderr: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout_s: float | None = None,
    heartbeat: Callable[[], None] | None = None,
    heartbeat_s: float = 30.0,
    new_session: bool = False,
    tail_lines: int = 20,
) -> Finished:
    """Run `cmd` to its end with stdout in `log` (stderr too, unless `stderr` names a file).

    `heartbeat()` is called at the start and every `heartbeat_s` while the child runs. A child
    still running after `timeout_s` is stopped (`exit_code` None). `new_session`: the child leads
    its own process group and is stopped with all it started (DDP ranks); without it, it shares
    the caller's, so a Ctrl-C in the terminal reaches it too. An exception in the caller while it
    waits (KeyboardInterrupt, SystemExit) stops the child and propagates.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with contextlib.ExitStack() as files:
        out = files.enter_context(open(log, "wb"))
        err = files.enter_context(open(stderr, "wb")) if stderr else subprocess.STDOUT
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=new_session,
            preexec_fn=functools.partial(die_with_parent, os.getpid()) if os.name == "posix" else None,
        )
        try:
            done = _wait(proc, deadline, heartbeat, heartbeat_s)
        except BaseException:
            _stop(proc, new_session)
            raise
        if done is None:
            _stop(proc, new_session)
    seconds = time.perf_counter() - start
    if done is None:
        return Finished(None, seconds, math.nan, log, f"timeout: killed after {timeout_s:g} s")
    code, rss_mb = done
    error = None if code == 0 else tail(stderr or log, tail_lines) or f"exit code {code}, no output on stderr"
    return Finished(code, seconds, rss_mb, log, error)


def _wait(
    proc: subprocess.Popen, deadline: float | None, heartbeat: Callable[[], None] | None, heartbeat_s: float
) -> tuple[int, float] | None:
    """Poll the child until it ends -> (exit code, peak RSS MB); None once `deadline` has passed."""
    next_beat = time.monotonic()
    while True:
        if heartbeat is not None and time.monotonic() >= next_beat:
            heartbeat()
            next_beat = time.monotonic() + heartbeat_s
        done = _reap(proc)
        if done is not None:
            return done
        if deadline is not None and time.monotonic() > deadline:
            return None
        time.sleep(_POLL_S)


def _reap(proc: subprocess.Popen) -> tuple[int, float] | None:
    """(exit code, peak RSS MB) of an ended child, reaped here; None while it runs."""
    if not hasattr(os, "wait4"):
        code = proc.poll()
        return None if code is None else (code, math.nan)
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid == 0:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped: Popen must not wait for it again
    return proc.returncode, usage.ru_maxrss / _MAXRSS_PER_MB


def _stop(proc: subprocess.Popen, group: bool, grace_s: float = 10.0) -> None:
    """SIGTERM (the whole group with `group`), then SIGKILL if the child has not ended within `grace_s`."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait_s)


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


def run_function(
    target: str,
    spec: Mapping[str, Any],
    workdir: Path,
    name: str,
    *,
    env: Mapping[str, str] | None = None,
    cwd: str | Path | None = None,
    timeout_s: float | None = None,
) -> tuple[dict[str, Any] | None, Finished]:
    """Run `target(spec)` (`"module:function"`, importable in the child; it returns a JSON-able dict)
    in a child of its own session -> (its dict, or None if it failed; how the child ended).
    Files: `<workdir>/<name>.spec.json`, `.result.json`, `.log`."""
    workdir.mkdir(parents=True, exist_ok=True)
    spec_path, result_path = workdir / f"{name}.spec.json", workdir / f"{name}.result.json"
    spec_path.write_text(json.dumps(dict(spec), indent=2))
    result_path.unlink(missing_ok=True)  # a leftover must not pass for this run's result
    cmd = [sys.executable, "-m", "rankrm.launch", target, str(spec_path), str(result_path)]
    fin = launch(cmd, workdir / f"{name}.log", env=env, cwd=cwd, timeout_s=timeout_s, new_session=True)
    return (read_json(result_path) if fin.ok else None), fin


def _serve(argv: Sequence[str]) -> int:
    """The child side of `run_function`: `python -m rankrm.launch MODULE:FUNCTION SPEC RESULT`."""
    from rankrm.io import atomic_write_text

    target, spec_path, result_path = argv
    module, _, function = target.partition(":")
    result = getattr(importlib.import_module(module), function)(json.loads(Path(spec_path).read_text()))
    atomic_write_text(result_path, json.dumps(result, indent=2))  # NaN kept: the caller computes with it
    return 0


def read_json(path: str | Path) -> dict[str, Any] | None:
    """A JSON object from a file; None if it is missing, unreadable or not an object."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):  # missing, unreadable, half-written (a run killed mid-write)
        return None
    return data if isinstance(data, dict) else None


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """What a runner wrote to `<run dir>/metrics.json`; {} if it wrote nothing readable."""
    return read_json(Path(run_dir) / "metrics.json") or {}


def metric_value(metrics: Mapping[str, Any], path: str) -> float | None:
    """`val/pair_acc` -> metrics["val"]["pair_acc"] (`/` or `.` between levels, `wall_time_s` at the
    top); None unless it is a finite number."""
    node: Any = metrics
    for part in re.split(r"[/.]", path):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, (int, float)) or not math.isfinite(node):
        return None
    return float(node)


if __name__ == "__main__":
    sys.exit(_serve(sys.argv[1:]))
