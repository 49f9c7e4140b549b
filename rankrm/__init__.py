"""rankrm: reward models trained on human ranked lists.

Library of pure pieces (`losses`, `metrics`, `data`, `model`, `backbones`, `export`, `reward`);
`train`, `sweep` and `score` are the runners that glue them together. `rankrm.reward_function(dir)`
scores with an export as training did, with TRL's reward-function signature (`rankrm.reward`).
"""

from pathlib import Path

__version__ = "0.1.0"

# The Hydra configs ship inside the package (a wheel carries them); a user's own config dir joins
# through Hydra's search path (`hydra.searchpath=[file:///my/conf]`): conf/README.md. Their schema
# (types, defaults, rules) is rankrm.config.
CONF_DIR = Path(__file__).resolve().parent / "conf"


def __getattr__(name: str) -> object:
    # Lazy: `import rankrm` (every submodule does) must not import torch and transformers.
    if name in ("reward_function", "load_reward_model"):
        from rankrm import reward

        return getattr(reward, name)
    raise AttributeError(f"module 'rankrm' has no attribute {name!r}")
