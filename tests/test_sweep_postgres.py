"""Sweeps on a real PostgreSQL server, as several hosts use it: a throwaway cluster (tests/pg_cluster.py),
hosts started at the same instant on a fresh database, one killed mid-trial, the study read back
as optuna-dashboard reads it. The storage URL helpers (env:/file:, masking, driver errors) need no server.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
import wsgiref.util
from pathlib import Path

import optuna
import pytest
from data_fixtures import strict_rows, write_jsonl
from hydra.core.override_parser.overrides_parser import OverridesParser
from optuna.trial import TrialState
from pg_cluster import Cluster

from rankrm.errors import RankrmError
from rankrm.sweep.storage import check_driver, dashboard_arg, mask, open_storage, resolve, scrub, study_lock
from rankrm.sweep.study import MACHINE_ENV, open_study
from rankrm.sweep.worker import next_trial

optuna.logging.set_verbosity(optuna.logging.WARNING)
N_TRIALS = 3
HOSTS = 3
URL_ENV = "RANKRM_TEST_STORAGE"


# ---------------------------------------------------------------- URL handling (no server needed)
@pytest.mark.parametrize(
    "url, shown",
    [
        ("postgresql://ann:s3cr%40t@db.lan:5432/optuna", "postgresql://ann:***@db.lan:5432/optuna"),
        (
            "postgresql://ann@/optuna?host=/run/pg&password=pw&port=5433",
            "postgresql://ann@/optuna?host=/run/pg&password=***&port=5433",
        ),
        ("postgresql://ann@db.lan/optuna", "postgresql://ann@db.lan/optuna"),
        ("sqlite:////tmp/a:b@c/study.db", "sqlite:////tmp/a:b@c/study.db"),
    ],
)
def test_mask_hides_the_password_and_nothing_else(url, shown):
    assert mask(url) == shown


def test_scrub_masks_the_password_wherever_an_error_repeats_it():
    url = "postgresql://ann:s3cr%40t@db.lan/optuna"
    text = scrub(f"could not connect to {url}: password s3cr@t refused (s3cr%40t)", url)
    assert "s3cr" not in text and "postgresql://ann:***@db.lan/optuna" in text


def test_storage_from_env_or_file(tmp_path, monkeypatch):
    url = "postgresql://ann:pw@db.lan/optuna"
    monkeypatch.setenv("MY_STORAGE", url)
    (tmp_path / "url").write_text(f"\n{url}\n")
    assert resolve("env:MY_STORAGE", tmp_path) == resolve(f"file:{tmp_path / 'url'}", tmp_path) == url
    assert resolve(None, tmp_path) == f"sqlite:///{tmp_path / 'study.db'}" and resolve(url, tmp_path) == url
    assert dashboard_arg("env:MY_STORAGE", url) == '"$MY_STORAGE"' and dashboard_arg(url, url) == mask(url)
    monkeypatch.delenv("MY_STORAGE")
    with pytest.raises(RankrmError, match="environment variable MY_STORAGE is not set"):
        resolve("env:MY_STORAGE", tmp_path)
    (tmp_path / "url").write_text(f"{url}\n{url}\n")
    with pytest.raises(RankrmError, match="must hold one line, the storage URL; it has 2"):
        resolve(f"file:{tmp_path / 'url'}", tmp_path)


def test_hydra_reads_a_quoted_url_with_query_parameters_whole():
    """rankrm/sweep/README.md's quoting: `'storage="...?host=...&port=..."'` reaches the config as the plain URL."""
    url = "postgresql://ann@/optuna?host=/var/run/postgresql&port=5433"
    (override,) = OverridesParser.create().parse_overrides([f'storage="{url}"'])
    assert override.value() == url
    with pytest.raises(Exception, match="mismatched input '='"):  # what users hit unquoted
        OverridesParser.create().parse_overrides([f"storage={url}"])


@pytest.mark.parametrize(
    "url, hidden, expected",
    [
        ("postgresql://ann:pw@db.lan/optuna", "psycopg", "needs the psycopg driver: pip install 'rankrm[postgres]'"),
        ("postgresql+psycopg2://ann:pw@db.lan/optuna", "psycopg2", "pip install 'psycopg2-binary'"),
        ("postgres://ann:pw@db.lan/optuna", None, "'postgres' is not a database SQLAlchemy knows"),
    ],
)
def test_missing_driver_or_unknown_database_is_one_line_naming_what_to_install(url, hidden, expected, monkeypatch):
    if hidden:
        monkeypatch.setitem(sys.modules, hidden, None)  # `import <hidden>` now raises ImportError
    with pytest.raises(RankrmError, match=expected.replace("[", r"\[").replace("]", r"\]")) as e:
        check_driver(url)
    assert "pw" not in str(e.value) and "\n" not in str(e.value)


def test_an_unreachable_server_is_one_line_without_the_password():
    pytest.importorskip("psycopg", reason="pip install -e '.[postgres]'")
    with pytest.raises(RankrmError) as e:
        open_storage("postgresql://ann:hunter2@127.0.0.1:1/optuna?connect_timeout=5")
    msg = str(e.value)
    assert msg.startswith("cannot open Optuna storage 'postgresql://ann:***@127.0.0.1:1/optuna?connect_timeout=5': ")
    assert "connection" in msg and "hunter2" not in msg and "\n" not in msg and "Background" not in msg


def test_cli_without_the_driver_exits_2_with_one_line(tmp_path):
    shadow = tmp_path / "shadow" / "psycopg"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError(\"No module named 'psycopg'\", name='psycopg')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])}
    env[URL_ENV] = "postgresql://ann:hunter2@127.0.0.1:1/optuna"
    cmd = [sys.executable, "-m", "rankrm.sweep", f"storage=env:{URL_ENV}", f"dir={tmp_path / 'sw'}"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "hunter2" not in r.stderr, r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        "rankrm: error: storage 'postgresql://ann:***@127.0.0.1:1/optuna' needs the psycopg driver: "
        "pip install 'rankrm[postgres]' (or: pip install 'psycopg[binary]')"
    )


# ---------------------------------------------------------------- a real server
@pytest.fixture(scope="module")
def pg():
    why = Cluster.missing() or (None if importlib.util.find_spec("psycopg") else "pip install -e '.[postgres]'")
    if why:
        pytest.skip(why)
    with Cluster.start() as cluster:
        yield cluster


def _race(n: int, target) -> list:
    """Run `target()` in n threads released at the same instant -> their results (or exceptions)."""
    barrier, out = threading.Barrier(n), [None] * n

    def run(i: int) -> None:
        barrier.wait()
        try:
            out[i] = target()
        except Exception as e:  # reported, not swallowed: the test asserts on it
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_workers_opening_a_fresh_database_at_once_all_join_one_study(pg):
    url = pg.create_database("race")

    def join() -> bool:
        storage = open_storage(url, heartbeat_s=1)
        with study_lock(url, "s"):
            return open_study(storage, "s", ["maximize"])[1]

    created = _race(8, join)
    assert sorted(created, key=str) == [False] * 7 + [True], created
    assert [s.study_name for s in optuna.get_all_study_summaries(url)] == ["s"]


def test_the_budget_is_exact_when_many_workers_ask_at_once(pg):
    url = pg.create_database("budget")
    open_study(open_storage(url), "s", ["maximize"])
    settings = {"url": url, "study_name": "s", "n_trials": 5}

    def worker() -> int:
        storage = open_storage(url)
        study, ran = optuna.load_study(study_name="s", storage=storage), 0
        while (trial := next_trial(study, storage, settings)) is not None:
            study.tell(trial, trial.suggest_float("x", 0, 1))
            ran += 1
        return ran

    ran = _race(6, worker)
    assert sum(ran) == 5, ran
    assert len(optuna.load_study(study_name="s", storage=url).trials) == 5


# ---------------------------------------------------------------- three hosts, one killed mid-trial
SWEEP = """# @package _global_
objectives: [{{metric: val/pair_acc, direction: maximize}}]
pruner: {{name: median}}  # never prunes 3 trials (5 startup trials), but each trial reports to the study
params:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
threads_per_trial: 1
heartbeat_s: 1
train_overrides: [backbone=tiny_bert, data=jsonl, "data.source.path={data}", "data.source.fractions=[0.6,0.2,0.2]",
                  trainer.max_steps=2, trainer.val_check_interval=2, data.batch_size=4]
"""


def _setup(root: Path) -> None:
    write_jsonl(root / "lists.jsonl", strict_rows(30))
    (root / "conf" / "sweep").mkdir(parents=True)
    (root / "conf" / "sweep" / "hosts.yaml").write_text(SWEEP.format(data=root / "lists.jsonl"))


def _host(root: Path, i: int, storage: str) -> list[str]:
    return [sys.executable, "-m", "rankrm.sweep", "--config-dir", str(root / "conf"), "sweep=hosts"] + [
        f"dir={root / f'host{i}'}",
        f"n_trials={N_TRIALS}",
        storage,
    ]


@pytest.fixture(scope="module")
def swept(pg, tmp_path_factory):
    """Three hosts started together on a fresh database (two get the URL with its password from an
    environment variable, one reaches the socket with a URL quoted on the command line); each has
    its own machine id, so the killed host's trial can only be found by its silent heartbeat."""
    root = tmp_path_factory.mktemp("hosts")
    _setup(root)
    url = pg.create_database("hosts")
    storages = [f"storage=env:{URL_ENV}", f"storage=env:{URL_ENV}", f'storage="{pg.socket_url("hosts")}"']
    procs = []
    for i, storage in enumerate(storages):
        env = {**os.environ, URL_ENV: url, MACHINE_ENV: f"host{i}", "HF_HUB_OFFLINE": "1"}
        procs.append(
            subprocess.Popen(
                _host(root, i, storage), cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )
        )
    victim, trials = procs[-1], root / f"host{HOSTS - 1}" / "trials"
    try:
        end = time.monotonic() + 600
        while not list(trials.glob("*/command.txt")):  # its first trial is starting: kill the host mid-trial
            assert victim.poll() is None and time.monotonic() < end, victim.stderr.read().decode()[-3000:]
            time.sleep(0.1)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = int(next(trials.glob("*/command.txt")).parent.name)
        errors = [p.communicate(timeout=900)[1].decode() for p in procs[:-1]]
    finally:  # a failed or hung run leaves no sweep behind
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert [p.returncode for p in procs[:-1]] == [0, 0], errors
    return root, url, killed, errors


def test_hosts_started_together_end_with_n_trials_after_one_is_killed(swept):
    root, url, killed, _ = swept
    trials = optuna.load_study(study_name="hosts", storage=url).trials
    done = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(done) == N_TRIALS and len(trials) == N_TRIALS + 1, [(t.number, t.state) for t in trials]
    dead = trials[killed]
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed]
    assert dead.state == TrialState.FAIL and retry.state == TrialState.COMPLETE
    assert retry.user_attrs["retry_reason"] == "no heartbeat" and retry.params == dead.params
    assert len({json.dumps(t.params, sort_keys=True) for t in done}) == N_TRIALS  # no param set ran twice
    assert all(t.intermediate_values for t in done)  # the pruning callback in each trial reached the study
    workers = {t.user_attrs["worker"].split(":")[0] for t in trials}
    assert workers == {f"host{i}" for i in range(HOSTS)}  # every host took a trial


def test_the_password_is_in_no_file_and_no_log(swept, pg):
    root, _, _, errors = swept
    leaks = [p for p in root.rglob("*") if p.is_file() and pg.password.encode() in p.read_bytes()]
    assert not leaks and not any(pg.password in e for e in errors)
    report = (root / "host0" / "report.md").read_text()
    assert f"postgresql://rankrm:***@127.0.0.1:{pg.port}/hosts" in report and f'optuna-dashboard "${URL_ENV}"' in report


def test_any_host_writes_the_report_from_the_storage_alone(swept):
    root, url, _, _ = swept
    env = {**os.environ, URL_ENV: url}
    cmd = _host(root, 9, f"storage=env:{URL_ENV}") + ["report_only=true"]
    r = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not (root / "host9" / "trials").exists()

    def trials_table(host: str) -> str:
        text = (root / host / "report.md").read_text()
        return text[text.index("## Trials") : text.index("## Best trial")]

    assert trials_table("host9") == trials_table("host0") and "re-queued as" in trials_table("host9")
    assert (root / "host9" / "figures" / "history.png").stat().st_size > 0


def _get(app, path: str) -> dict:
    environ: dict = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status[0].startswith("200"), (status, body[:500])
    return json.loads(body)


def test_the_dashboard_reads_the_study(swept):
    """optuna-dashboard's own storage loader and HTTP API (its WSGI app); without it, Optuna's
    public API as the dashboard calls it."""
    _, url, killed, _ = swept
    if importlib.util.find_spec("optuna_dashboard") is None:
        (summary,) = optuna.get_all_study_summaries(url)
        trials = optuna.load_study(study_name=summary.study_name, storage=url).trials
        states = [t.state.name.capitalize() for t in trials]
    else:
        import optuna_dashboard

        app = optuna_dashboard.wsgi(url)
        (summary,) = _get(app, "/api/studies")["study_summaries"]
        states = [t["state"] for t in _get(app, f"/api/studies/{summary['study_id']}")["trials"]]
    assert states.count("Complete") == N_TRIALS and states[killed] == "Fail"
