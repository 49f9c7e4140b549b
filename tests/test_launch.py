"""rankrm.launch (the one launcher of sweeps, ablations and benchmarks) and rankrm.overrides."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser

from rankrm.launch import child_env, launch, metric_value, read_metrics, run_function, runner_command
from rankrm.overrides import merge_overrides, override_key
from rankrm.paths import DATA_DIR_ENV


def _py(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def _gone(pid: int, limit_s: float = 30.0) -> bool:
    """True once `pid` has ended (a zombie counts as ended), False if it still runs after `limit_s`."""
    end = time.monotonic() + limit_s
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def _wait_for_file(path: Path, limit_s: float = 60.0) -> str:
    end = time.monotonic() + limit_s
    while not (path.is_file() and path.read_text().strip()):
        assert time.monotonic() < end, f"gave up waiting for {path}"
        time.sleep(0.05)
    return path.read_text().strip()


# ---------------------------------------------------------------- overrides, metrics
def test_merge_overrides_last_wins_by_key() -> None:
    merged = merge_overrides(["data.batch_size=4", "loss=ranklist", "++x.y=1"], ["data.batch_size=48", "x.y=2"])
    assert merged == ["loss=ranklist", "data.batch_size=48", "x.y=2"]
    assert merge_overrides(["a=1", "++b.c=2", "+a=3", "d=4"]) == ["++b.c=2", "+a=3", "d=4"]
    assert merge_overrides(["x=1"], ["~x"]) == ["~x"] and override_key("++a.b=c=d") == "a.b"


def test_metric_value_reads_nested_finite_numbers_only() -> None:
    metrics = {"val": {"pair_acc": 0.8, "n": 3, "flag": True, "bad": float("nan")}, "wall_time_s": 12.5}
    metrics["data"] = {"train": {"overlong_filtered": 2}}
    assert metric_value(metrics, "val/pair_acc") == 0.8 and metric_value(metrics, "val/n") == 3.0
    assert metric_value(metrics, "wall_time_s") == 12.5 and metric_value(metrics, "data/train.overlong_filtered") == 2
    for missing in ("val/flag", "val/bad", "val/ndcg", "val", "test/pair_acc", "wall_time_s/x"):
        assert metric_value(metrics, missing) is None, missing


def test_runner_command_quotes_the_run_dir_for_hydra(tmp_path: Path) -> None:
    run_dir = tmp_path / "a b=c's"
    cmd = runner_command(["loss=listnet"], run_dir, runner="sweep")
    assert cmd[:4] == [sys.executable, "-m", "rankrm.sweep", "loss=listnet"]
    assert OverridesParser.create().parse_override(cmd[-1]).value() == str(run_dir)
    assert runner_command([], run_dir, command=["x"])[0] == "x"


def test_child_env_is_offline_with_an_absolute_data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv(DATA_DIR_ENV, "shared/data")
    env = child_env(threads=3, pythonpath=[tmp_path / "mods"])
    assert env[DATA_DIR_ENV] == str(tmp_path / "shared" / "data") and env["HF_HUB_OFFLINE"] == "1"
    assert env["OMP_NUM_THREADS"] == "3" and env["PYTHONPATH"].split(os.pathsep)[0] == str(tmp_path / "mods")


# ---------------------------------------------------------------- the child process
def test_failed_child_reports_its_last_stderr_lines(tmp_path: Path) -> None:
    code = (
        "import sys; print('out'); print('line 1', file=sys.stderr); print('rankrm: error: bad', file=sys.stderr);"
        "print('Set the environment variable HYDRA_FULL_ERROR=1', file=sys.stderr); sys.exit(3)"
    )
    fin = launch(_py(code), tmp_path / "out.txt", stderr=tmp_path / "err.txt", tail_lines=1)
    assert fin.exit_code == 3 and not fin.ok and fin.error == "rankrm: error: bad"  # Hydra's hint left out
    assert (tmp_path / "out.txt").read_text() == "out\n"
    ok = launch(_py("print('fine')"), tmp_path / "log.txt")
    assert ok.ok and ok.error is None and ok.seconds > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc; ru_maxrss units differ elsewhere")
def test_peak_rss_is_the_childs_peak_when_it_exceeds_the_callers(tmp_path: Path) -> None:
    """wait4's ru_maxrss: a fork starts from its parent's RSS (this pytest process holds torch), so the
    child allocates well above it; the figure covers memory the child freed before exiting."""
    parent_mb = int(Path("/proc/self/status").read_text().split("VmRSS:")[1].split()[0]) / 1024
    mb = int(parent_mb) + 300
    code = f"x = bytearray({mb} * 2**20); x[::4096] = b'1' * len(x[::4096]); del x; print('freed')"
    fin = launch(_py(code), tmp_path / "log.txt")
    assert fin.ok and mb <= fin.peak_rss_mb < mb + 100


def test_timeout_stops_the_child_and_its_process_group(tmp_path: Path) -> None:
    code = (
        "import subprocess, sys, time;"
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']);"
        f"open({str(tmp_path / 'pid')!r}, 'w').write(str(p.pid)); time.sleep(600)"
    )
    fin = launch(_py(code), tmp_path / "log.txt", timeout_s=5, new_session=True)
    assert fin.exit_code is None and fin.error == "timeout: killed after 5 s" and math.isnan(fin.peak_rss_mb)
    assert _gone(int(_wait_for_file(tmp_path / "pid")))  # the grandchild went with its group


def test_heartbeat_beats_while_the_child_runs_and_an_exception_stops_it(tmp_path: Path) -> None:
    beats: list[float] = []
    fin = launch(
        _py("import time; time.sleep(1.0)"), tmp_path / "a.txt", heartbeat=lambda: beats.append(1), heartbeat_s=0.2
    )
    assert fin.ok and len(beats) >= 2  # one at the start, more while it sleeps

    def interrupt() -> None:
        if (tmp_path / "pid").is_file():
            raise KeyboardInterrupt

    code = f"import os, time; open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    with pytest.raises(KeyboardInterrupt):
        launch(_py(code), tmp_path / "b.txt", heartbeat=interrupt, heartbeat_s=0.05)
    assert _gone(int(_wait_for_file(tmp_path / "pid")), limit_s=0)  # stopped before launch re-raised


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_a_killed_caller_leaves_no_orphan(tmp_path: Path) -> None:
    child = f"import os, time; open({str(tmp_path / 'pid')!r}, 'w').write(str(os.getpid())); time.sleep(600)"
    log = tmp_path / "log"
    caller = f"from pathlib import Path; from rankrm.launch import launch; launch({_py(child)!r}, Path({str(log)!r}))"
    proc = subprocess.Popen(_py(caller))
    pid = int(_wait_for_file(tmp_path / "pid"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert _gone(pid)


def test_run_function_returns_what_the_function_returned(tmp_path: Path) -> None:
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "worker_mod.py").write_text(
        "def work(spec):\n    return {'twice': spec['x'] * 2, 'nan': float('nan')}\n"
        "def fail(spec):\n    raise ValueError('no ' + spec['x'])\n"
    )
    env = child_env(pythonpath=[tmp_path / "mods"])
    result, fin = run_function("worker_mod:work", {"x": 21}, tmp_path / "w", "ok", env=env)
    assert fin.ok and result is not None and result["twice"] == 42 and math.isnan(result["nan"])
    assert json.loads((tmp_path / "w" / "ok.spec.json").read_text()) == {"x": 21}
    result, fin = run_function("worker_mod:fail", {"x": "luck"}, tmp_path / "w", "bad", env=env)
    assert result is None and fin.exit_code == 1 and fin.error.splitlines()[-1] == "ValueError: no luck"


def test_read_metrics_of_a_run_dir(tmp_path: Path) -> None:
    assert read_metrics(tmp_path) == {}
    (tmp_path / "metrics.json").write_text('{"val": {"pair_acc": 0.5')  # a run killed while writing
    assert read_metrics(tmp_path) == {}
    (tmp_path / "metrics.json").write_text('{"val": {"pair_acc": 0.5}}')
    assert metric_value(read_metrics(tmp_path), "val/pair_acc") == 0.5
