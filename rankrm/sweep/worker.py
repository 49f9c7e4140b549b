"""A sweep worker: take the study's next trial, run it as a training subprocess, tell the result.

Workers on any number of hosts share one study through its storage. The study-level steps (re-queue
dead trials, check the budget, ask) run under the study lock, so the study gets exactly `n_trials`
trials; a worker with nothing left to take waits while trials of others run (when the storage keeps
heartbeats), so a trial whose host dies is re-queued and re-run by a worker still there.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from rankrm.launch import die_with_parent, runner_command
from rankrm.overrides import hydra_value, to_overrides
from rankrm.sweep.space import Objective, sample
from rankrm.sweep.storage import CHILD_ENV, has_study_lock, open_storage, study_lock
from rankrm.sweep.study import (
    PRUNED_ATTR,
    budget_left,
    build_pruner,
    build_sampler,
    recover_dead_trials,
    requeue,
    requeue_stale,
    stored_trial,
    trial_id,
    worker_token,
)
from rankrm.sweep.trial import Outcome, drop_checkpoints, objective_values, run_child, summary_attrs

log = logging.getLogger("rankrm.sweep")
WAIT_POLL_S = 5.0  # how often an idle worker looks at the study while others finish (at most heartbeat_s)


def child_command(s: dict[str, Any], trial: optuna.Trial, params: dict[str, Any], trial_dir: Path) -> list[str]:
    """The training command of one trial: fixed overrides, sampled params (keys disjoint, see _settings),
    threads, the pruning callback when pruning is on, and the run dir."""
    overrides = [*s["fixed"], *to_overrides(params)]
    if s["threads"] is not None:
        overrides.append(f"threads={s['threads']}")
    if s["pruning"]:
        cb = "+callbacks.optuna_pruning"
        overrides += [
            f"{cb}._target_=rankrm.sweep.pruning.OptunaPruning",
            f"{cb}.storage=env:{CHILD_ENV}",  # the URL itself (maybe with a password) stays out of argv
            f"{cb}.study_name={hydra_value(s['study_name'])}",
            f"{cb}.trial_number={trial.number}",
            f"{cb}.monitor={hydra_value(s['objectives'][0].metric)}",
        ]
    return runner_command(overrides, trial_dir, command=s["command"])


def finish(study: optuna.Study, trial: optuna.Trial, out: Outcome, objectives: list[Objective]) -> None:
    """Tell the study how the child ended: PRUNED (callback said so), FAIL (+ error) or COMPLETE."""
    for key, value in summary_attrs(out.metrics).items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("seconds", round(out.seconds, 2))
    pruned = PRUNED_ATTR in stored_trial(study, trial.number).user_attrs  # set by the child
    error = out.error
    values = None
    if error is None and not pruned:
        values, error = objective_values(out.metrics, objectives)
    if error is not None:
        trial.set_user_attr("error", error)
        trial.set_user_attr("exit_code", out.exit_code)
        study.tell(trial, state=TrialState.FAIL)
        log.warning("trial %d FAILED (exit %s): %s", trial.number, out.exit_code, error.splitlines()[-1])
    elif pruned:
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, values)


def _run_trial(
    study: optuna.Study, storage: optuna.storages.BaseStorage, trial: optuna.Trial, s: dict[str, Any]
) -> None:
    trial_dir = s["sweep_dir"] / "trials" / str(trial.number)
    try:
        params = sample(trial, s["space"])
    except (ValueError, TypeError) as e:  # e.g. an enqueued value the space no longer allows
        trial.set_user_attr("error", f"cannot sample params: {e}")
        study.tell(trial, state=TrialState.FAIL)
        return
    cmd = child_command(s, trial, params, trial_dir)
    # What defines this model (base_overrides only make sweep runs quiet): `rankrm.train <these>` reproduces it.
    trial.set_user_attr("overrides", [*s["model_overrides"], *to_overrides(params)])
    log.info("trial %d: %s", trial.number, " ".join(to_overrides(params)))
    beat = None
    if _beats(storage):  # Optuna itself beats only in optimize()
        tid = trial_id(storage, s["study_name"], trial.number)
        beat = lambda: storage.record_heartbeat(tid)  # noqa: E731
    env = {**os.environ, CHILD_ENV: s["url"]}  # read by the pruning callback
    try:
        out = run_child(cmd, trial_dir, s.get("trial_timeout_s"), beat, float(s["heartbeat_s"] or 30), env)
    except (KeyboardInterrupt, SystemExit):
        with study_lock(s["url"], s["study_name"]):
            requeue(study, stored_trial(study, trial.number), "sweep interrupted")
        raise
    finish(study, trial, out, s["objectives"])
    if not s["keep_checkpoints"]:
        drop_checkpoints(trial_dir)


def _beats(storage: optuna.storages.BaseStorage) -> bool:
    """Whether trials of this storage keep heartbeats (RDB storages with heartbeat_s set)."""
    return bool(getattr(storage, "get_heartbeat_interval", lambda: None)())


def _sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # same path as Ctrl-C: stop the child, re-queue its trial


def run_worker(s: dict[str, Any], index: int = 0) -> int:
    """Ask-run-tell until the study holds n_trials finished/running trials; returns trials run here."""
    if multiprocessing.parent_process() is not None:  # a spawned worker: no Hydra logging here
        die_with_parent()
        logging.basicConfig(
            level=logging.INFO,
            format=f"[%(asctime)s][worker {index}][%(levelname)s] %(message)s",
            handlers=[logging.StreamHandler(), logging.FileHandler(s["sweep_dir"] / "sweep.log")],
        )
    if threading.current_thread() is not threading.main_thread():
        return _work(s, index)  # signal handlers can only be set from the main thread
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        return _work(s, index)
    finally:
        signal.signal(signal.SIGTERM, previous)


def next_trial(study: optuna.Study, storage: optuna.storages.BaseStorage, s: dict[str, Any]) -> optuna.Trial | None:
    """Under the study lock (one step for all workers on all hosts): re-queue dead trials, then a
    trial (a queued one first) if the study has fewer than n_trials, with this worker's token and
    first heartbeat on it (Optuna never finds a trial stale before its first beat); None when the
    study has them all."""
    with study_lock(s["url"], s["study_name"]):
        recover_dead_trials(study, locked=has_study_lock(s["url"]))
        if budget_left(study, int(s["n_trials"])) <= 0:
            return None
        with warnings.catch_warnings():  # we do record heartbeats ourselves, around the subprocess
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        trial.set_user_attr("worker", worker_token())  # lets a restart on this machine spot it if we die
        if _beats(storage):
            storage.record_heartbeat(trial_id(storage, s["study_name"], trial.number))
        return trial


def _others_running(study: optuna.Study, storage: optuna.storages.BaseStorage) -> int:
    """RUNNING trials this worker should wait for: with heartbeats, one whose worker dies is re-queued
    by a worker still looking, so idle workers stay until the last trial has finished."""
    return len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))) if _beats(storage) else 0


def _work(s: dict[str, Any], index: int) -> int:
    """The worker loop: next trial (or wait while others run), run, tell."""
    storage = open_storage(s["url"], s["heartbeat_s"], on_stale=requeue_stale)
    study = optuna.load_study(
        study_name=s["study_name"],
        storage=storage,
        sampler=build_sampler(s["sampler"], int(s["seed"])),
        pruner=build_pruner(s["pruner"] if s["pruning"] else None),
    )
    done, waiting = 0, False
    log.info("worker %d (pid %d) joined study %r", index, os.getpid(), s["study_name"])
    while True:
        trial = next_trial(study, storage, s)
        if trial is None:
            running = _others_running(study, storage)
            if not running:
                log.info("worker %d: study has its %s trials; ran %d here", index, s["n_trials"], done)
                return done
            if not waiting:
                log.info(
                    "worker %d: all trials taken; waiting for %d running (re-run here if one dies)", index, running
                )
                waiting = True
            time.sleep(min(WAIT_POLL_S, float(s["heartbeat_s"] or WAIT_POLL_S)))
            continue
        waiting = False
        # Params are drawn lazily at suggest time, so a sampler seeded by the (unique) trial number
        # set now draws them: a sweep replays from its seed, also when resumed, and parallel
        # workers (on any host) never share a random stream.
        study.sampler = build_sampler(s["sampler"], int(s["seed"]) + trial.number)
        _run_trial(study, storage, trial, s)
        done += 1


def spawn_workers(s: dict[str, Any]) -> None:
    ctx = multiprocessing.get_context("spawn")  # no fork: the parent holds DB connections
    procs = [ctx.Process(target=run_worker, args=(s, i), name=f"rankrm-sweep-{i}") for i in range(s["workers"])]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join()
    except KeyboardInterrupt:
        for p in procs:
            p.terminate()  # SIGTERM: each worker re-queues its running trial
        for p in procs:
            p.join()
        raise
    bad = [p.name for p in procs if p.exitcode]
    if bad:
        log.error("worker(s) %s exited with an error; see the log above", ", ".join(bad))
