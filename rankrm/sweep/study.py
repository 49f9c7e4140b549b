"""Optuna plumbing of a sweep: sampler, pruner, the study, the trial budget and crash recovery.

Shared by the sweep workers (parent side) and the pruning callback (inside each training process).
A trial whose worker died is failed and a copy with the same params is enqueued (user attrs
`retry_of`: the dead trial's number, `retry_reason`), so a killed sweep loses nothing it completed
and still reaches `n_trials`. Only Optuna's public API: a trial of another process is failed with
`Study.tell(number)`, and its storage id (for heartbeats and the pruning callback) comes from the
storage's public (study name, number) -> id mapping. Optuna's own RetryHeartbeatStaleTrialCallback
is not used: it copies the dead trial's user attrs (its worker, overrides) onto the retry and
covers only stale heartbeats, not a worker found dead on this host or an interrupted one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from rankrm.errors import RankrmError

log = logging.getLogger("rankrm.sweep")

PRUNER_ATTR = "rankrm_pruner"  # study user attr: pruner spec, read back by the pruning callback
PRUNED_ATTR = "pruned_at_step"  # trial user attr set by the callback when it stopped training
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
MACHINE_ENV = "RANKRM_SWEEP_MACHINE"  # overrides machine_id(), e.g. where hostnames repeat across machines


def _build_named(
    kind: str, spec: Mapping[str, Any] | None, default: str, registry: Mapping[str, Any], **extra: Any
) -> Any:
    """`{name: <key of registry>, kwargs: {...}}` -> registry[name](**extra, **kwargs); a bad name or
    kwarg names the config key (`<kind>.name` / `<kind>.kwargs`)."""
    spec = dict(spec or {})
    name, kwargs = str(spec.get("name") or default).lower(), dict(spec.get("kwargs") or {})
    if name not in registry:
        raise RankrmError(f"{kind}.name must be one of {sorted(registry)}, got {name!r}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return registry[name](**extra, **kwargs)
    except TypeError as e:
        raise RankrmError(f"{kind}.kwargs for {name}: {e}") from e


def build_pruner(spec: Mapping[str, Any] | None) -> optuna.pruners.BasePruner:
    """`{name: median | hyperband | none, kwargs: {...}}` -> an Optuna pruner."""
    return _build_named(
        "pruner",
        spec,
        "none",
        {
            "median": optuna.pruners.MedianPruner,
            "hyperband": optuna.pruners.HyperbandPruner,
            # kwargs left over from the defaults do not apply to none
            "none": lambda **_: optuna.pruners.NopPruner(),
        },
    )


def build_sampler(spec: Mapping[str, Any] | None, seed: int) -> optuna.samplers.BaseSampler:
    """`{name: tpe | nsga2 | random, kwargs: {...}}` -> a sampler seeded with `seed`."""
    return _build_named(
        "sampler",
        spec,
        "tpe",
        {
            "tpe": optuna.samplers.TPESampler,
            "nsga2": optuna.samplers.NSGAIISampler,
            "random": optuna.samplers.RandomSampler,
        },
        seed=seed,
    )


def open_study(
    storage: optuna.storages.BaseStorage,
    name: str,
    directions: list[str],
    pruner: optuna.pruners.BasePruner | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study or join the existing one -> (study, created here); its directions must match
    the config's. Hosts starting together: one insert wins, the others get DuplicatedStudyError and join."""
    try:
        study = optuna.create_study(storage=storage, study_name=name, directions=directions, pruner=pruner)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(storage=storage, study_name=name, pruner=pruner), False
    have = [d.name.lower() for d in study.directions]
    if have != directions:
        raise RankrmError(
            f"study {name!r} already exists with directions {have}, the config asks for "
            f"{directions}: change study_name (or dir) or restore the objectives"
        )
    return study, created


def load_study(storage: optuna.storages.BaseStorage, name: str) -> optuna.Study:
    try:
        return optuna.load_study(storage=storage, study_name=name)
    except KeyError as e:
        raise RankrmError(f"no study named {name!r} in the storage: run the sweep first") from e


def retried(trials: list[FrozenTrial]) -> dict[int, FrozenTrial]:
    """Number of a re-queued dead trial -> its retry (the retry carries `retry_of`)."""
    return {t.user_attrs["retry_of"]: t for t in trials if "retry_of" in t.user_attrs}


def trial_id(storage: optuna.storages.BaseStorage, study_name: str, number: int) -> int:
    """The storage id of trial `number` (Optuna keeps `Trial._trial_id` private; the storage maps it)."""
    return storage.get_trial_id_from_study_id_trial_number(storage.get_study_id_from_name(study_name), number)


def stored_trial(study: optuna.Study, number: int) -> FrozenTrial:
    """Trial `number` as the storage holds it now (its training process may have written to it since)."""
    return next(t for t in study.get_trials(deepcopy=False) if t.number == number)


def budget_left(study: optuna.Study, n_trials: int) -> int:
    """Trials still to start: n_trials minus running and finished ones (n_trials is the study
    total); a dead trial that was re-queued does not count, its retry does. Exact when the check and
    the `ask` that follows hold the study lock (`storage.study_lock`); workers of a storage without
    one that check at the same moment may both start a trial: at most workers-1 extra."""
    trials = study.get_trials(deepcopy=False)
    again = retried(trials)
    used = sum(t.state == TrialState.RUNNING or (t.state in FINISHED and t.number not in again) for t in trials)
    return n_trials - used


def requeue(study: optuna.Study, t: FrozenTrial, why: str) -> None:
    """Fail a dead RUNNING trial (if not already failed) and enqueue a copy of its params."""
    if t.state == TrialState.RUNNING:
        try:
            study.tell(t.number, state=TrialState.FAIL)
        except (ValueError, optuna.exceptions.UpdateFinishedTrialError):
            return  # finished meanwhile: another worker got there first and re-queued it
    study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number, "retry_reason": why})
    log.warning("trial %d: %s; failed and re-queued with the same params", t.number, why)


def machine_id() -> str:
    """This machine as trial worker tokens name it: `$RANKRM_SWEEP_MACHINE`, else hostname/boot id/pid
    namespace (containers on one host can share a hostname and the boot id; their pids overlap)."""
    if os.environ.get(MACHINE_ENV):
        return os.environ[MACHINE_ENV].replace(":", "_")
    parts = [socket.gethostname()]
    with contextlib.suppress(OSError):  # no procfs (macOS): the hostname alone
        parts.append(Path("/proc/sys/kernel/random/boot_id").read_text().strip()[:8])
        parts.append(os.readlink("/proc/self/ns/pid"))  # pid:[<inode>]
    return "/".join(parts).replace(":", "_")


def requeue_stale(study: optuna.Study, t: FrozenTrial) -> None:
    """The storage's heartbeat callback: Optuna failed `t` (its worker went silent), queue its copy."""
    requeue(study, t, "no heartbeat")


def worker_token(pid: int | None = None) -> str | None:
    """`machine:pid:start-time` of a live process here (start time guards against pid reuse); None if dead."""
    pid = os.getpid() if pid is None else pid
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        start = stat.rsplit(")", 1)[1].split()[19]  # field 22 (starttime); comm may contain spaces
    except FileNotFoundError:
        return None
    except OSError:  # no procfs (macOS): fall back to a liveness probe without start time
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass
        start = "?"
    return f"{machine_id()}:{pid}:{start}"


def recover_dead_trials(study: optuna.Study, locked: bool = False) -> int:
    """Re-queue RUNNING trials whose worker on this machine is gone (and, for RDB storages, those of
    any machine whose heartbeat went stale). Returns how many were re-queued here. Hold the study
    lock: a worker checking the budget meanwhile must not see the failed trial without its retry.
    `locked` (a real lock is held): a RUNNING trial without a worker token is one whose worker died
    between asking for it and recording its token and first heartbeat (one locked step), which no
    heartbeat would ever reveal."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    here, n = machine_id(), 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        token = t.user_attrs.get("worker")
        if not token and locked:
            requeue(study, t, "its worker died as it took the trial")
            n += 1
            continue
        if not token or token.rsplit(":", 2)[0] != here:
            continue  # another machine's trial (or not started by rankrm): only its heartbeat can tell
        pid = int(token.rsplit(":", 2)[1])
        if worker_token(pid) != token:
            requeue(study, t, f"its worker ({token}) is gone")
            n += 1
    return n
