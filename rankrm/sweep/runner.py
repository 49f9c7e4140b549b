"""Optuna sweeps over training configs: `python -m rankrm.sweep sweep=<name> [key=value ...]`.

Each trial is a `python -m rankrm.train` subprocess with the sampled params as Hydra overrides
and `hydra.run.dir=<sweep dir>/trials/<number>`; its metrics.json gives the objective values.
The study lives in an Optuna storage (sqlite in the sweep dir by default): re-running the
command resumes it, `workers=N` runs N worker processes, and the same command on other hosts
joins the study. `report_only=true` rewrites report.md and the figures from the storage.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

import hydra
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from rankrm import CONF_DIR
from rankrm.errors import RankrmError, exit_on_user_error
from rankrm.launch import die_with_parent, runner_command
from rankrm.overrides import hydra_value, merge_overrides, override_key, to_overrides
from rankrm.sweep.space import Objective, parse_objectives, parse_space, sample
from rankrm.sweep.study import (
    PRUNED_ATTR,
    PRUNER_ATTR,
    budget_left,
    build_pruner,
    build_sampler,
    load_study,
    open_storage,
    open_study,
    recover_dead_trials,
    requeue,
    storage_url,
    stored_trial,
    trial_id,
    worker_token,
)
from rankrm.sweep.trial import Outcome, drop_checkpoints, objective_values, run_child, summary_attrs

log = logging.getLogger("rankrm.sweep")


def _settings(cfg: dict[str, Any]) -> dict[str, Any]:
    """Validate the composed config once (in the parent) and derive what the workers need."""
    objectives = parse_objectives(cfg["objectives"])
    space = parse_space(cfg["params"])
    # Later overrides of a key win: extra_overrides beat train_overrides, which beat base_overrides.
    model = merge_overrides(map(str, cfg.get("train_overrides") or []), map(str, cfg.get("extra_overrides") or []))
    fixed = merge_overrides(map(str, cfg.get("base_overrides") or []), model)
    keys = {override_key(o) for o in fixed}
    for p in space:
        if p.name in keys:
            raise RankrmError(f"params.{p.name} is also a fixed training override: keep one")
    if "hydra.run.dir" in keys:
        raise RankrmError("hydra.run.dir is set by the sweep (<dir>/trials/<number>): remove it from the overrides")
    for params in cfg.get("enqueue") or []:
        unknown = set(params) - {p.name for p in space}
        if unknown:
            raise RankrmError(f"enqueue: {sorted(unknown)} are not in params (a queued trial fixes searched params)")
    if int(cfg["n_trials"]) < 1 or int(cfg["workers"]) < 1:
        raise RankrmError("n_trials and workers must be >= 1")
    pruning = len(objectives) == 1 and str((cfg.get("pruner") or {}).get("name") or "none").lower() != "none"
    build_pruner(cfg.get("pruner"))  # fail on a bad pruner before any trial runs
    build_sampler(cfg.get("sampler"), int(cfg["seed"]))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = cfg.get("threads_per_trial") or max(1, cores // int(cfg["workers"]))
    sweep_dir = Path(cfg["dir"]).resolve()
    return dict(
        cfg,
        objectives=objectives,
        space=space,
        fixed=fixed,
        model_overrides=model,
        pruning=pruning,
        sweep_dir=sweep_dir,
        threads=None if "threads" in keys | {p.name for p in space} else int(threads),
        url=storage_url(cfg.get("storage"), sweep_dir),
        command=[str(c) for c in cfg.get("command") or []],  # []: python -m rankrm.train
    )


def _child_command(s: dict[str, Any], trial: optuna.Trial, params: dict[str, Any], trial_dir: Path) -> list[str]:
    """The training command of one trial: fixed overrides, sampled params (keys disjoint, see _settings),
    threads, the pruning callback when pruning is on, and the run dir."""
    overrides = [*s["fixed"], *to_overrides(params)]
    if s["threads"] is not None:
        overrides.append(f"threads={s['threads']}")
    if s["pruning"]:
        cb = "+callbacks.optuna_pruning"
        overrides += [
            f"{cb}._target_=rankrm.sweep.pruning.OptunaPruning",
            f"{cb}.storage={hydra_value(s['url'])}",
            f"{cb}.study_name={hydra_value(s['study_name'])}",
            f"{cb}.trial_number={trial.number}",
            f"{cb}.monitor={hydra_value(s['objectives'][0].metric)}",
        ]
    return runner_command(overrides, trial_dir, command=s["command"])


def _finish(study: optuna.Study, trial: optuna.Trial, out: Outcome, objectives: list[Objective]) -> None:
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
    trial.set_user_attr("worker", worker_token())  # lets a restart spot this trial if we die
    trial_dir = s["sweep_dir"] / "trials" / str(trial.number)
    try:
        params = sample(trial, s["space"])
    except (ValueError, TypeError) as e:  # e.g. an enqueued value the space no longer allows
        trial.set_user_attr("error", f"cannot sample params: {e}")
        study.tell(trial, state=TrialState.FAIL)
        return
    cmd = _child_command(s, trial, params, trial_dir)
    # What defines this model (base_overrides only make sweep runs quiet): `rankrm.train <these>` reproduces it.
    trial.set_user_attr("overrides", [*s["model_overrides"], *to_overrides(params)])
    log.info("trial %d: %s", trial.number, " ".join(to_overrides(params)))
    beat = None
    if getattr(storage, "get_heartbeat_interval", lambda: None)():  # RDB storages; Optuna beats only in optimize()
        tid = trial_id(storage, s["study_name"], trial.number)
        beat = lambda: storage.record_heartbeat(tid)  # noqa: E731
    try:
        out = run_child(cmd, trial_dir, s.get("trial_timeout_s"), beat, float(s["heartbeat_s"] or 30))
    except (KeyboardInterrupt, SystemExit):
        requeue(study, stored_trial(study, trial.number), "sweep interrupted")
        raise
    _finish(study, trial, out, s["objectives"])
    if not s["keep_checkpoints"]:
        drop_checkpoints(trial_dir)


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


def _work(s: dict[str, Any], index: int) -> int:
    """The worker loop: re-queue dead trials, check the budget, ask, run, tell."""
    storage = open_storage(s["url"], s["heartbeat_s"])
    study = optuna.load_study(
        study_name=s["study_name"],
        storage=storage,
        sampler=build_sampler(s["sampler"], int(s["seed"])),
        pruner=build_pruner(s["pruner"] if s["pruning"] else None),
    )
    done = 0
    log.info("worker %d (pid %d) joined study %r", index, os.getpid(), s["study_name"])
    while True:
        recover_dead_trials(study)
        if budget_left(study, int(s["n_trials"])) <= 0:
            log.info("worker %d: study has its %s trials; ran %d here", index, s["n_trials"], done)
            return done
        with warnings.catch_warnings():  # we do record heartbeats ourselves, around the subprocess
            warnings.filterwarnings("ignore", message="Heartbeat of storage")
            trial = study.ask()
        # Params are drawn lazily at suggest time, so a sampler seeded by the (unique) trial number
        # set now draws them: a sweep replays from its seed, also when resumed, and parallel
        # workers (on any host) never share a random stream.
        study.sampler = build_sampler(s["sampler"], int(s["seed"]) + trial.number)
        _run_trial(study, storage, trial, s)
        done += 1


def _spawn_workers(s: dict[str, Any]) -> None:
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


def sweep(cfg: dict[str, Any]) -> int:
    """Run (or resume) the sweep described by `cfg`, write the report; returns the exit code."""
    from rankrm.sweep.report import write_report  # matplotlib only when needed

    s = _settings(cfg)
    if s["report_only"]:
        db = Path(s["url"][len("sqlite:///") :])
        if s["url"].startswith("sqlite:///") and not db.is_file():
            raise RankrmError(f"no sweep storage at {db}: run the sweep first (or pass dir=/storage=)")
        study = load_study(open_storage(s["url"]), s["study_name"])
        print(f"wrote {write_report(study, s['sweep_dir'], s['objectives'], s['url'])}")
        return 0
    s["sweep_dir"].mkdir(parents=True, exist_ok=True)
    storage = open_storage(s["url"], s["heartbeat_s"])
    study = open_study(
        storage,
        s["study_name"],
        [o.direction for o in s["objectives"]],
        build_pruner(s["pruner"] if s["pruning"] else None),
    )
    metrics = [o.metric for o in s["objectives"]]
    if study.user_attrs.get("objectives", metrics) != metrics:
        raise RankrmError(
            f"study {s['study_name']!r} was run with objectives {study.user_attrs['objectives']}, "
            f"the config asks for {metrics}: use another study_name/dir or restore them"
        )
    study.set_user_attr("objectives", metrics)
    study.set_user_attr(PRUNER_ATTR, dict(s["pruner"]) if s["pruning"] else {"name": "none"})
    if not study.get_trials(deepcopy=False):
        for params in s.get("enqueue") or []:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    recover_dead_trials(study)
    log.info(
        "study %r in %s: %d trial(s) stored, %d to go",
        s["study_name"],
        s["url"],
        len(study.get_trials(deepcopy=False)),
        max(0, budget_left(study, int(s["n_trials"]))),
    )
    if s["workers"] == 1:
        run_worker(s)
    else:
        _spawn_workers(s)
    path = write_report(study, s["sweep_dir"], s["objectives"], s["url"])
    log.info("wrote %s", path)
    if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        print(f"rankrm: error: no trial completed; see {s['sweep_dir']}/trials/*/stderr.txt", file=sys.stderr)
        return 1
    return 0


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="sweep")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        code = sweep(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except KeyboardInterrupt:
        print("rankrm: interrupted; running trials were re-queued, re-run the command to resume", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)


if __name__ == "__main__":
    main()
