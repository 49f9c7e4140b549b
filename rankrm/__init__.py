"""rankrm: reward models trained on human ranked lists.

Library of pure pieces (`losses`, `metrics`, `data`, `model`, `backbones`, `export`);
`train`, `sweep` and `score` are the runners that glue them together.
"""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs ship inside the package (a wheel carries them); a user's own config dir joins
# through Hydra's search path (`hydra.searchpath=[file:///my/conf]`): conf/README.md. Their schema
# (types, defaults, rules) is rankrm.config.
CONF_DIR = Path(__file__).resolve().parent / "conf"
