"""rankrm.sweep: search spaces, pruning callback, crash/resume logic, and real tiny sweeps via the CLI."""

from __future__ import annotations

import inspect
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf, open_dict
from optuna.trial import TrialState

from rankrm import CONF_DIR
from rankrm.errors import RankrmError
from rankrm.overrides import hydra_value, to_overrides
from rankrm.sweep.pruning import OptunaPruning
from rankrm.sweep.runner import _settings, sweep
from rankrm.sweep.space import Objective, parse_objectives, parse_space, sample
from rankrm.sweep.storage import CHILD_ENV, open_storage
from rankrm.sweep.study import (
    PRUNED_ATTR,
    PRUNER_ATTR,
    budget_left,
    build_pruner,
    build_sampler,
    open_study,
    recover_dead_trials,
    requeue,
    requeue_stale,
    trial_id,
)
from rankrm.sweep.trial import Outcome, run_child
from rankrm.sweep.worker import child_command, finish

optuna.logging.set_verbosity(optuna.logging.WARNING)
ROOT = Path(__file__).resolve().parents[1]
SPACE = {
    "loss": {"type": "choice", "choices": ["pairwise", "listnet"]},
    "optimizer.lr": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True},
    "loss.kwargs.margin": {"type": "float", "low": 0.0, "high": 1.0, "when": {"loss": "pairwise"}},
    "data.k": {"type": "int", "low": 2, "high": 4},
}


# ---------------------------------------------------------------- search space, objectives
@pytest.mark.parametrize(
    "params, match",
    [
        ({}, "no `params`"),
        ({"optimizer.lr": {"type": "float", "low": 1e-3, "high": 1e-5}}, "low .* > high"),
        ({"optimizer.lr": {"type": "float", "low": 0.0, "high": 1.0, "log": True}}, "log scale needs low > 0"),
        ({"optimizer.lr": {"type": "floot", "low": 0.0, "high": 1.0}}, "needs `type"),
        ({"optimizer.lr": {"type": "float", "lo": 0.0, "high": 1.0}}, "unknown key"),
        ({"data.k": {"type": "int", "low": 2.5, "high": 4}}, "integers"),
        ({"loss": {"type": "choice", "choices": []}}, "non-empty"),
        ({"loss.kwargs.margin": {"type": "float", "low": 0, "high": 1, "when": {"loss": "pairwise"}}}, "listed before"),
    ],
)
def test_bad_space_is_a_user_error(params, match):
    with pytest.raises(RankrmError, match=match):
        parse_space(params)


def test_bad_objectives_are_user_errors():
    with pytest.raises(RankrmError, match="direction"):
        parse_objectives([{"metric": "val/pair_acc", "direction": "up"}])
    with pytest.raises(RankrmError, match="once"):
        parse_objectives([{"metric": "val/ndcg", "direction": "max"}] * 2)
    assert parse_objectives([{"metric": "val/ndcg", "direction": "min"}]) == [Objective("val/ndcg", "minimize")]


@pytest.mark.parametrize(
    "fixed, active",
    [
        (
            {"loss": "pairwise", "optimizer.lr": 1e-4, "loss.kwargs.margin": 0.5, "data.k": 3},
            ["loss", "optimizer.lr", "loss.kwargs.margin", "data.k"],
        ),
        ({"loss": "listnet", "optimizer.lr": 1e-4, "data.k": 3}, ["loss", "optimizer.lr", "data.k"]),
    ],
)
def test_conditional_params_are_sampled_only_when_active(fixed, active):
    chosen = sample(optuna.trial.FixedTrial(fixed), parse_space(SPACE))
    assert list(chosen) == active
    overrides = to_overrides(chosen)
    assert overrides[0] == f"loss={fixed['loss']}" and "++optimizer.lr=0.0001" in overrides


@pytest.mark.parametrize(
    "value", ["pairwise", "1", "true", "null", "a b", "it's", "x=y", "c:\\dir", "a\\'b", "end\\", 0.5, 3, True, None]
)
def test_hydra_value_round_trips_through_the_override_parser(value):
    parsed = OverridesParser.create().parse_override(f"++a.b={hydra_value(value)}").value()
    assert parsed == value and type(parsed) is type(value)


def _compose(tmp_path: Path, *overrides: str) -> dict:
    """The sweep config as the CLI composes it, with the test's conf dir on the search path."""
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "sweep", overrides=[f"hydra.searchpath=[file://{tmp_path / 'conf'}]", *overrides], return_hydra_config=True
        )
        HydraConfig.instance().set_config(cfg)  # lets ${hydra:runtime.choices.sweep} resolve
        try:
            with open_dict(cfg):
                del cfg["hydra"]
            return OmegaConf.to_container(cfg, resolve=True)
        finally:  # not left set: later composes in this process would resolve ${hydra:...} against it
            HydraConfig.instance().cfg = None


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF_DIR / "sweep").glob("*.yaml")))
def test_shipped_sweep_configs_compose_and_validate(name, tmp_path):
    s = _settings(_compose(tmp_path, f"sweep={name}"))
    assert s["study_name"] == name and s["sweep_dir"].name == name and s["space"]


# ---------------------------------------------------------------- budget, re-queue, pruning
def _study(tmp_path: Path, directions=("maximize",)) -> optuna.Study:
    return open_study(open_storage(f"sqlite:///{tmp_path / 'study.db'}"), "s", list(directions))[0]


def test_budget_counts_finished_and_running_but_not_requeued(tmp_path):
    study = _study(tmp_path)
    done, dead = study.ask(), study.ask()
    for t in (done, dead):
        t.suggest_float("x", 0, 1)
    study.tell(done, 1.0)
    assert budget_left(study, 3) == 1  # one complete + one running
    requeue(study, study._storage.get_trial(dead._trial_id), "worker gone")
    assert budget_left(study, 3) == 2  # the dead trial no longer counts; its copy waits
    retry = study.ask()
    retry.suggest_float("x", 0, 1)  # a queued trial's params are fixed, not yet suggested
    assert retry.params == dead.params and retry.user_attrs["retry_of"] == dead.number
    assert study._storage.get_trial(dead._trial_id).state == TrialState.FAIL


def test_heartbeats_keep_a_running_trial_and_a_silent_one_is_requeued(tmp_path):
    """RDB storages: a trial whose worker (on another host, so no pid to check) stopped beating for
    4 x heartbeat_s is failed and re-queued; one whose worker beats while its child runs is kept."""
    storage = open_storage(f"sqlite:///{tmp_path / 'study.db'}", heartbeat_s=1, on_stale=requeue_stale)
    study, created = open_study(storage, "s", ["maximize"])
    assert created and open_study(storage, "s", ["maximize"])[1] is False
    alive, silent = study.ask(), study.ask()
    for t in (alive, silent):
        t.suggest_float("x", 0, 1)
        t.set_user_attr("worker", "another-host:1:1")
        storage.record_heartbeat(trial_id(storage, "s", t.number))
    tid = trial_id(storage, "s", alive.number)
    child = [sys.executable, "-c", "import time; time.sleep(5.5)"]  # longer than the 4 s grace period
    out = run_child(child, tmp_path / "trial", beat=lambda: storage.record_heartbeat(tid), beat_every_s=1)
    assert out.exit_code == 0 and out.error is None
    recover_dead_trials(study)
    trials = study.trials
    assert [t.state for t in trials] == [TrialState.RUNNING, TrialState.FAIL, TrialState.WAITING]
    assert trials[2].user_attrs == {"retry_of": silent.number, "retry_reason": "no heartbeat"}
    retry = study.ask()
    retry.suggest_float("x", 0, 1)
    assert retry.number == 2 and retry.params == silent.params


def _fake_trainer(value: float, step: int) -> SimpleNamespace:
    return SimpleNamespace(
        sanity_checking=False,
        state=SimpleNamespace(fn="fit"),
        is_global_zero=True,
        callback_metrics={"val/ndcg": value},
        global_step=step,
        should_stop=False,
        strategy=SimpleNamespace(reduce_boolean_decision=lambda d, all=True: d),
    )


def test_pruning_callback_reports_stops_and_parent_marks_pruned(tmp_path):
    study = _study(tmp_path)
    study.set_user_attr(PRUNER_ATTR, {"name": "median", "kwargs": {"n_startup_trials": 1}})
    url = f"sqlite:///{tmp_path / 'study.db'}"
    good = study.ask()
    cb = OptunaPruning(url, "s", good.number, monitor="val/ndcg")
    for step, v in [(1, 0.8), (2, 0.9)]:
        trainer = _fake_trainer(v, step)
        cb.on_validation_end(trainer, None)
        assert not trainer.should_stop
    study.tell(good, 0.9)
    bad = study.ask()
    cb = OptunaPruning(url, "s", bad.number, monitor="val/ndcg")
    trainer = _fake_trainer(0.1, 1)
    cb.on_validation_end(trainer, None)
    assert trainer.should_stop
    frozen = study._storage.get_trial(bad._trial_id)
    assert frozen.intermediate_values == {1: 0.1} and frozen.user_attrs[PRUNED_ATTR] == 1
    finish(study, bad, Outcome(0, {"val": {"ndcg": 0.1}}), [Objective("val/ndcg", "maximize")])
    assert study._storage.get_trial(bad._trial_id).state == TrialState.PRUNED


def test_pruned_trial_command_builds_the_callback_for_its_trial(tmp_path):
    """The overrides the sweep adds for the pruning callback are the callback's arguments, for this trial."""
    s = _settings(_compose(tmp_path, "sweep=lr_pruned", f"dir={tmp_path / 'sw'}"))
    trial = _study(tmp_path).ask()
    cmd = child_command(s, trial, {"optimizer.lr": 1e-4}, tmp_path / "trial")
    prefix = "+callbacks.optuna_pruning."
    args = dict(c[len(prefix) :].split("=", 1) for c in cmd if c.startswith(prefix))
    assert args.pop("_target_") == "rankrm.sweep.pruning.OptunaPruning" and args["trial_number"] == str(trial.number)
    assert set(args) == set(inspect.signature(OptunaPruning).parameters)
    assert args["storage"] == f"env:{CHILD_ENV}" and not any(s["url"] in c for c in cmd)  # the URL is not in argv
    assert cmd[-1] == f"hydra.run.dir={hydra_value(str(tmp_path / 'trial'))}"


def test_missing_objective_fails_the_trial_with_its_reason(tmp_path):
    study = _study(tmp_path, ("maximize", "maximize"))
    t = study.ask()
    finish(
        study,
        t,
        Outcome(0, {"val": {"pair_acc": 0.7}}),
        parse_objectives(
            [{"metric": "val/pair_acc", "direction": "max"}, {"metric": "val/kendall_tau", "direction": "max"}]
        ),
    )
    frozen = study._storage.get_trial(t._trial_id)
    assert frozen.state == TrialState.FAIL and "val/kendall_tau" in frozen.user_attrs["error"]


# ---------------------------------------------------------------- the CLI with a fake trainer
FAKE_TRAIN = r"""
import json, os, sys, time
from pathlib import Path
args = dict(a.lstrip("+").split("=", 1) for a in sys.argv[1:])
run = Path(args["hydra.run.dir"].strip("'")); run.mkdir(parents=True, exist_ok=True)
(run / "pid").write_text(str(os.getpid()))
time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
lr = float(args["optimizer.lr"])
(run / "metrics.json").write_text(json.dumps({"val": {"ndcg": lr * 1000}}))
"""
FAKE_SWEEP = """# @package _global_
objectives: [{metric: val/ndcg, direction: maximize}]
pruner: {name: none}
params:
  optimizer.lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
"""


def _sweep_cli(
    tmp_path: Path, *overrides: str, sweep: str = "fake", env: dict | None = None, wait: bool = True
) -> subprocess.CompletedProcess | subprocess.Popen:
    where = [] if any(o.startswith("dir=") for o in overrides) else [f"dir={tmp_path / 'sw'}"]
    cmd = [
        sys.executable,
        "-m",
        "rankrm.sweep",
        "--config-dir",
        str(tmp_path / "conf"),
        f"sweep={sweep}",
        *where,
        *overrides,
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    if not wait:
        return subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)


def _fake_setup(tmp_path: Path) -> str:
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "fake.yaml").write_text(FAKE_SWEEP)
    (tmp_path / "fake_train.py").write_text(FAKE_TRAIN)
    return f"command=[{sys.executable},{tmp_path / 'fake_train.py'}]"


def _trials(tmp_path: Path, name: str = "fake") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'sw' / 'study.db'}").trials


def _wait_for(cond, what: str, limit_s: float = 120.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + limit_s
    while not cond():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"sweep exited ({proc.returncode}) before {what}: {proc.stderr.read()}")
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.2)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z" if Path("/proc").exists() else True


def _sweep_in_its_first_trial(tmp_path: Path, n_trials: int) -> tuple[str, subprocess.Popen, Path]:
    """A sweep CLI whose trials sleep 600 s, once trial 0 runs: (command override, the sweep, trial 0's pid file)."""
    command = _fake_setup(tmp_path)
    proc = _sweep_cli(tmp_path, command, f"n_trials={n_trials}", env={"FAKE_SLEEP": "600"}, wait=False)
    pid_file = tmp_path / "sw" / "trials" / "0" / "pid"
    _wait_for(lambda: pid_file.exists() and pid_file.read_text(), "the first trial to start", proc=proc)
    return command, proc, pid_file


@pytest.mark.slow
def test_killed_sweep_requeues_its_running_trial_and_reaches_n_trials(tmp_path):
    command, proc, pid_file = _sweep_in_its_first_trial(tmp_path, 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    child = int(pid_file.read_text())
    _wait_for(lambda: not _alive(child), "the orphaned trial process to be stopped", 30)
    assert [t.state for t in _trials(tmp_path)] == [TrialState.RUNNING]

    r = _sweep_cli(tmp_path, command, "n_trials=2")
    assert r.returncode == 0, r.stderr
    dead, retry, new = _trials(tmp_path)
    assert dead.state == TrialState.FAIL and "gone" in retry.user_attrs["retry_reason"]
    assert retry.state == new.state == TrialState.COMPLETE
    assert retry.user_attrs["retry_of"] == 0 and retry.params == dead.params
    assert "re-queued as #1" in (tmp_path / "sw" / "report.md").read_text()


@pytest.mark.slow
def test_interrupted_sweep_stops_its_trial_and_requeues_it(tmp_path):
    _, proc, pid_file = _sweep_in_its_first_trial(tmp_path, 1)
    proc.send_signal(signal.SIGTERM)  # what a scheduler sends; Ctrl-C takes the same path
    assert proc.wait(timeout=120) == 130 and b"re-queued" in proc.stderr.read()
    assert not _alive(int(pid_file.read_text()))
    dead, retry = _trials(tmp_path)
    assert (dead.state, retry.state) == (TrialState.FAIL, TrialState.WAITING)
    assert retry.user_attrs == {"retry_of": 0, "retry_reason": "sweep interrupted"}


def test_trial_timeout_is_recorded_failed_and_the_sweep_exits_nonzero(tmp_path, monkeypatch):
    command = _fake_setup(tmp_path)
    monkeypatch.setenv("FAKE_SLEEP", "600")  # inherited by the trial process
    assert (
        sweep(_compose(tmp_path, "sweep=fake", command, "n_trials=1", "trial_timeout_s=1", f"dir={tmp_path / 'sw'}"))
        == 1
    )
    (t,) = _trials(tmp_path)
    assert t.state == TrialState.FAIL and t.user_attrs["error"].startswith("timeout")


def test_sweep_replays_from_its_seed_also_when_resumed(tmp_path):
    command = _fake_setup(tmp_path)
    runs = {"whole": [4], "resumed": [2, 4]}
    params = {}
    for name, budgets in runs.items():
        for n in budgets:
            assert sweep(_compose(tmp_path, "sweep=fake", command, f"n_trials={n}", f"dir={tmp_path / name}")) == 0
        storage = f"sqlite:///{tmp_path / name / 'study.db'}"
        params[name] = [t.params for t in optuna.load_study(study_name="fake", storage=storage).trials]
    assert params["whole"] == params["resumed"] and len({p["optimizer.lr"] for p in params["whole"]}) == 4


def test_journal_storage_with_two_workers_gets_exactly_n_trials(tmp_path):
    """The study lock of a journal file sits beside Optuna's own `<file>.lock`, not on it."""
    command = _fake_setup(tmp_path)
    journal = tmp_path / "shared" / "study.log"
    overrides = [command, "n_trials=3", "workers=2", f"storage=journal:{journal}", f"dir={tmp_path / 'sw'}"]
    assert sweep(_compose(tmp_path, "sweep=fake", *overrides)) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(journal)))
    assert [t.state for t in optuna.load_study(study_name="fake", storage=storage).trials] == [TrialState.COMPLETE] * 3


def test_config_errors_exit_2_with_one_line(tmp_path):
    command = _fake_setup(tmp_path)
    r = _sweep_cli(tmp_path, command, "train_overrides=['optimizer.lr=1e-4']")
    assert r.returncode == 2 and r.stderr.strip().splitlines()[-1].startswith("rankrm: error: params.optimizer.lr")
    with pytest.raises(RankrmError, match="no sweep storage"):
        sweep(_compose(tmp_path, "sweep=fake", command, "report_only=true", f"dir={tmp_path / 'nothing'}"))
    assert sweep(_compose(tmp_path, "sweep=fake", command, "n_trials=1", f"dir={tmp_path / 'sw'}")) == 0
    with pytest.raises(RankrmError, match=r"was run with objectives \['val/ndcg'\]"):
        sweep(
            _compose(
                tmp_path,
                "sweep=fake",
                command,
                "n_trials=2",
                f"dir={tmp_path / 'sw'}",
                "objectives=[{metric:val/loss,direction:maximize}]",
            )
        )


def test_later_fixed_overrides_win(tmp_path):
    """extra_overrides beat train_overrides, which beat base_overrides; each key once, where it was set last."""
    s = _settings(
        _compose(
            tmp_path,
            "sweep=loss_family",
            'base_overrides=["test=false","data.limit_val=1"]',
            'extra_overrides=["data.limit_train=200","++data.limit_val=7"]',
        )
    )
    assert s["fixed"][0] == "test=false" and s["fixed"][-2:] == ["data.limit_train=200", "++data.limit_val=7"]
    assert "data.limit_train=1000" not in s["fixed"] and "data.limit_val=400" not in s["model_overrides"]
    assert len(s["fixed"]) == len({o.split("=")[0].lstrip("+") for o in s["fixed"]})


# ---------------------------------------------------------------- real tiny sweeps through the CLI
TINY_SWEEP = """# @package _global_
params:
  optimizer.lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}
  loss: {{type: choice, choices: [pairwise, listnet]}}
  optimizer.weight_decay: {{type: float, low: 0.0, high: 0.1}}
enqueue:  # out of range on purpose: the config check refuses it, so trial 0 crashes
  - {{optimizer.lr: 1.0e-3, loss: pairwise, optimizer.weight_decay: -1.0}}
threads_per_trial: 1
train_overrides: [backbone=tiny_bert, data=jsonl, "data.source.path={data}", "data.source.fractions=[0.6,0.2,0.2]",
                  trainer.max_steps=2, data.batch_size=4]
"""


def _tiny_setup(tmp_path: Path) -> None:
    """30 graded lists (scores with ties, so pair accuracy and Kendall tau differ) and a sweep config."""
    words = ["good", "great", "bad", "awful", "fine", "nice", "poor", "okay"]
    with open(tmp_path / "lists.jsonl", "w") as f:
        for i in range(30):
            responses = [f"{words[(i + j) % 8]} {words[(3 * i + j) % 8]} item {j}" for j in range(4)]
            f.write(json.dumps({"prompt": f"review {i}", "responses": responses, "scores": [3, 2, 2, 0]}) + "\n")
    (tmp_path / "conf" / "sweep").mkdir(parents=True)
    (tmp_path / "conf" / "sweep" / "tiny.yaml").write_text(TINY_SWEEP.format(data=tmp_path / "lists.jsonl"))


@pytest.mark.slow
def test_real_sweep_fails_one_trial_resumes_with_two_workers_and_reports(tmp_path):
    _tiny_setup(tmp_path)
    r = _sweep_cli(tmp_path, "n_trials=2", sweep="tiny")
    assert r.returncode == 0, r.stderr[-3000:]
    crashed, done = first = _trials(tmp_path, "tiny")
    assert (
        crashed.state == TrialState.FAIL
        and "weight_decay must be a number >= 0, got -1.0" in crashed.user_attrs["error"]
    )
    assert done.state == TrialState.COMPLETE and len(done.values) == 2, done.user_attrs.get("error")
    assert done.values == [done.user_attrs["val"]["pair_acc"], done.user_attrs["val"]["kendall_tau"]]
    assert (tmp_path / "sw" / "trials" / "1" / "metrics.json").is_file()
    assert not (tmp_path / "sw" / "trials" / "1" / "checkpoints").exists()

    # Re-running resumes: n_trials is the total, two workers add the 2 missing trials.
    r = _sweep_cli(tmp_path, "n_trials=4", "workers=2", sweep="tiny")
    assert r.returncode == 0, r.stderr[-3000:]
    trials = _trials(tmp_path, "tiny")
    assert [(t.number, t.state, t.datetime_start) for t in trials[:2]] == [
        (t.number, t.state, t.datetime_start) for t in first
    ]
    assert [t.number for t in trials] == list(range(4))
    assert [t.state for t in trials[2:]] == [TrialState.COMPLETE] * 2, [t.user_attrs.get("error") for t in trials]
    assert all(len(t.values) == 2 for t in trials[2:])
    log = (tmp_path / "sw" / "sweep.log").read_text()
    assert "[worker 0]" in log and "[worker 1]" in log

    report = tmp_path / "sw" / "report.md"
    for fig in ("history", "pareto", "params_val_pair_acc", "params_val_kendall_tau"):
        assert f"figures/{fig}.png" in report.read_text()
        assert (tmp_path / "sw" / "figures" / f"{fig}.png").stat().st_size > 0
    report.unlink()
    r = _sweep_cli(tmp_path, "report_only=true", sweep="tiny")
    assert r.returncode == 0, r.stderr[-3000:]
    text = report.read_text()
    assert "## Pareto front" in text and "weight_decay must be" in text and "## Parameter importances" in text
    assert "| 3 | COMPLETE |" in text and "importances need at least" in text


@pytest.mark.parametrize(
    "build, spec, expected",
    [
        (build_pruner, {"name": "median", "kwargs": {"n_startup_trials": 2}}, optuna.pruners.MedianPruner),
        (build_pruner, {"name": "none", "kwargs": {"n_startup_trials": 2}}, optuna.pruners.NopPruner),
        (build_pruner, {"name": "asha"}, "pruner.name must be one of"),
        (build_pruner, {"name": "median", "kwargs": {"bogus": 1}}, "pruner.kwargs for median"),
        (lambda s: build_sampler(s, 3), None, optuna.samplers.TPESampler),
        (lambda s: build_sampler(s, 3), {"name": "cmaes"}, "sampler.name must be one of"),
        (lambda s: build_sampler(s, 3), {"name": "tpe", "kwargs": {"bogus": 1}}, "sampler.kwargs for tpe"),
    ],
    ids=[
        "median",
        "none_ignores_kwargs",
        "bad_pruner",
        "bad_pruner_kwarg",
        "default_tpe",
        "bad_sampler",
        "bad_sampler_kwarg",
    ],
)
def test_pruner_and_sampler_specs(build, spec, expected):
    """Config specs build the named Optuna object; a bad name or kwarg names its config key."""
    if isinstance(expected, str):
        with pytest.raises(RankrmError, match=expected):
            build(spec)
    else:
        assert type(build(spec)) is expected
