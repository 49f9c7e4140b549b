"""Lightning callback that reports validation metrics of a sweep trial to Optuna and stops a bad run.

The sweep runs each trial as a `rankrm.train` subprocess; it adds this callback with overrides
  +callbacks.optuna_pruning._target_=rankrm.sweep.pruning.OptunaPruning
  +callbacks.optuna_pruning.storage=env:RANKRM_SWEEP_STORAGE ...study_name=<name> ...trial_number=<n>
  +callbacks.optuna_pruning.monitor=val/pair_acc
(the sweep puts the URL in that variable of the trial's environment: a password stays out of argv
and the trial's .hydra/). The callback opens the same storage, reports `monitor` at every
validation (step = global step) and asks the study's pruner (spec stored on the study by the
sweep). When pruned, it records `pruned_at_step` on the trial and sets `trainer.should_stop`: the
run ends cleanly, writes its metrics, and the sweep (the parent) marks the trial PRUNED.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import optuna
from lightning.pytorch.trainer.states import TrainerFn

from rankrm.sweep.storage import open_storage, resolve
from rankrm.sweep.study import PRUNED_ATTR, PRUNER_ATTR, build_pruner, trial_id

log = logging.getLogger("rankrm")


class OptunaPruning(pl.Callback):
    """Report `monitor` to Optuna trial `trial_number` after each validation; stop training if pruned."""

    def __init__(self, storage: str, study_name: str, trial_number: int, monitor: str = "val/pair_acc") -> None:
        super().__init__()
        self.storage_url, self.study_name = storage, study_name
        self.trial_number, self.monitor = int(trial_number), monitor
        self._trial: optuna.Trial | None = None
        self._warned = False

    def _get_trial(self) -> optuna.Trial:
        """Open the study lazily: only rank 0 talks to the storage (opening it costs a connection)."""
        if self._trial is None:
            storage = open_storage(resolve(self.storage_url, Path.cwd()))
            # The sampler is never used here; RandomSampler keeps Trial() from doing sampler work.
            study = optuna.load_study(
                study_name=self.study_name,
                storage=storage,
                sampler=optuna.samplers.RandomSampler(),
                pruner=build_pruner(None),
            )
            study.pruner = build_pruner(study.user_attrs.get(PRUNER_ATTR))
            self._trial = optuna.trial.Trial(study, trial_id(storage, self.study_name, self.trial_number))
        return self._trial

    def _should_prune(self, trainer: pl.Trainer) -> bool:
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            if not self._warned:
                log.warning("optuna pruning: %r was not logged; nothing reported", self.monitor)
                self._warned = True
            return False
        trial, step = self._get_trial(), int(trainer.global_step)
        with warnings.catch_warnings():  # a repeated step (validation twice at one step) is ignored
            warnings.simplefilter("ignore")
            trial.report(float(value), step)
        if not trial.should_prune():
            return False
        trial.set_user_attr(PRUNED_ATTR, step)
        log.info("optuna pruning: trial %d pruned at step %d (%s=%.4f)", trial.number, step, self.monitor, float(value))
        return True

    def on_validation_end(self, trainer: pl.Trainer, pl_module: Any) -> None:
        if trainer.sanity_checking or trainer.state.fn != TrainerFn.FITTING:
            return  # the final trainer.validate() of the best checkpoint is not a pruning step
        prune = self._should_prune(trainer) if trainer.is_global_zero else False
        # Every rank must agree or DDP hangs at the next collective.
        if trainer.strategy.reduce_boolean_decision(prune, all=False):
            trainer.should_stop = True
