"""Optuna sweeps over training configs: `python -m rankrm.sweep sweep=<name> [key=value ...]`.

`runner` (CLI, worker loop), `space` (search space -> Hydra overrides, objectives), `study`
(storage, sampler, pruner, budget, crash recovery), `trial` (one training subprocess),
`pruning` (the Lightning callback inside a trial), `report` + `plots` (report.md, figures).
"""
