"""Optuna sweeps over training configs: `python -m rankrm.sweep sweep=<name> [key=value ...]`.

Each trial is a `python -m rankrm.train` subprocess with the sampled params as Hydra overrides
and `hydra.run.dir=<sweep dir>/trials/<number>`; its metrics.json gives the objective values.
The study lives in an Optuna storage (sqlite in the sweep dir by default; `storage=` a URL, or
`env:NAME` / `file:PATH` holding one): re-running the command resumes it, `workers=N` runs N
worker processes (`worker.py`), and the same command on other hosts joins the study (hosts
started together too; see README.md here). `report_only=true` rewrites report.md and the figures
from the storage alone, on any host.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import hydra
import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from rankrm import CONF_DIR
from rankrm.errors import RankrmError, exit_on_user_error
from rankrm.overrides import merge_overrides, override_key
from rankrm.sweep.space import parse_objectives, parse_space
from rankrm.sweep.storage import (
    dashboard_arg,
    has_password,
    has_study_lock,
    mask,
    open_storage,
    resolve,
    study_lock,
)
from rankrm.sweep.study import (
    PRUNER_ATTR,
    budget_left,
    build_pruner,
    build_sampler,
    load_study,
    open_study,
    recover_dead_trials,
    requeue_stale,
)
from rankrm.sweep.worker import run_worker, spawn_workers

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
    spec = cfg.get("storage")
    url = resolve(spec, sweep_dir)
    if spec and has_password(spec):  # given as the URL itself: on the command line and in .hydra/
        log.warning(
            "storage URL holds a password: it is saved in %s/.hydra/ and shown by ps; "
            "pass storage=env:NAME or storage=file:PATH instead (rankrm/sweep/README.md)",
            sweep_dir,
        )
    return dict(
        cfg,
        objectives=objectives,
        space=space,
        fixed=fixed,
        model_overrides=model,
        pruning=pruning,
        sweep_dir=sweep_dir,
        threads=None if "threads" in keys | {p.name for p in space} else int(threads),
        url=url,
        dashboard=dashboard_arg(spec, url),
        command=[str(c) for c in cfg.get("command") or []],  # []: python -m rankrm.train
    )


def _join_study(storage: optuna.storages.BaseStorage, s: dict[str, Any]) -> optuna.Study:
    """Create the study (and queue `enqueue`) or join it; the objectives must be those it was run with."""
    study, created = open_study(
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
    if created:
        for params in s.get("enqueue") or []:
            study.enqueue_trial(dict(params), skip_if_exists=True)
    recover_dead_trials(study, locked=has_study_lock(s["url"]))
    return study


def sweep(cfg: dict[str, Any]) -> int:
    """Run (or resume) the sweep described by `cfg`, write the report; returns the exit code."""
    from rankrm.sweep.report import write_report  # matplotlib only when needed

    s = _settings(cfg)
    if s["report_only"]:
        db = Path(s["url"][len("sqlite:///") :])
        if s["url"].startswith("sqlite:///") and not db.is_file():
            raise RankrmError(f"no sweep storage at {db}: run the sweep first (or pass dir=/storage=)")
        study = load_study(open_storage(s["url"]), s["study_name"])
        print(f"wrote {write_report(study, s['sweep_dir'], s['objectives'], mask(s['url']), s['dashboard'])}")
        return 0
    s["sweep_dir"].mkdir(parents=True, exist_ok=True)
    storage = open_storage(s["url"], s["heartbeat_s"], on_stale=requeue_stale)
    with study_lock(s["url"], s["study_name"]):  # hosts starting together: one creates and queues, all join
        study = _join_study(storage, s)
    log.info(
        "study %r in %s: %d trial(s) stored, %d to go",
        s["study_name"],
        mask(s["url"]),
        len(study.get_trials(deepcopy=False)),
        max(0, budget_left(study, int(s["n_trials"]))),
    )
    if s["workers"] == 1:
        run_worker(s)
    else:
        spawn_workers(s)
    path = write_report(study, s["sweep_dir"], s["objectives"], mask(s["url"]), s["dashboard"])
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
