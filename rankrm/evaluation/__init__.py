"""Evaluation of reward models (`python -m rankrm.evaluate`): RewardBench scoring and what it cannot see.

specs.py        --data SPEC -> lists to score (+ the val lists that fit calibration)
rewardbench.py  RewardBench v1 / v2 rows, subsets and scoring rules (ported, with citations)
scorer.py       MODEL -> a `rankrm.reward.LoadedRewardModel`; `score` = `rankrm.reward.score_lists` + a progress bar
stats.py        per-list columns: ranking metrics, length bias, gap / rank breakdowns
calibration.py  P(i > j) = sigmoid((r_i - r_j) / T): NLL, Brier, ECE, temperature fit
bootstrap.py    seeded percentile intervals resampling whole lists (clusters, strata)
results.py      scores.jsonl records -> results.json (`compute_results`)
figures.py      reliability diagram, reward vs length, accuracy by gap / rank (matplotlib, Agg)
report.py       report.md
run.py          glue for the CLI and for `rankrm.train`'s test_report
See README.md here for the command line, the output files and every definition.
"""
