"""rankrm: reward models trained on human ranked lists.

Library of pure pieces (`losses`, `metrics`, `data`, `model`, `backbones`, `export`);
`train`, `sweep` and `score` are the runners that glue them together.
"""

__version__ = "0.1.0"
