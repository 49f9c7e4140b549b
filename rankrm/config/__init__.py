"""rankrm's config rules in one place: the typed schema of every group (`schema`), its validator
(`types`), and the runner's command-line check (`cli`).

`validate(cfg)` checks a composed train config: every field of every group (type, range, choice,
unknown key) and the cross-field rules, with one `RankrmError` line naming the key, the value and
what is allowed. It needs no torch, no model and no data: preflight runs it first.
`register()` puts the schema defaults into Hydra's ConfigStore as `<group>/base` (and `base` for
train.yaml's root); importing this package registers them, and so does Hydra itself at start-up
(`hydra_plugins/rankrm_config`), so any compose of rankrm/conf finds them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from rankrm.config.schema import BASES, GROUPS, Train
from rankrm.config.types import check, check_fields
from rankrm.errors import RankrmError

REQUIRED = ("data", "backbone", "loss", "optimizer", "trainer")  # groups the runner cannot do without


def validate(cfg: Any) -> None:
    """Check a composed train config (DictConfig or dict) against the schema; raise one RankrmError."""
    c = _plain(cfg)
    for group in REQUIRED:
        if c.get(group) is None:
            raise RankrmError(f"the config has no {group}: pick one ({group}=<option of rankrm/conf/{group}/>)")
    # The root first: groups take values from it (${paths.output_dir}), so a bad root value is named as such.
    check_fields("", {k: v for k, v in c.items() if k != "hydra"}, Train, skip=GROUPS)
    for group, tp in GROUPS.items():
        if group in c:
            check(group, c[group], tp)


def group_config(group: str, cfg: Any) -> dict[str, Any]:
    """One group's config merged over its schema defaults (a partial dict is fine) and validated:
    what a library caller (e.g. `build_reward_model`) gets instead of composing with Hydra."""
    from omegaconf import OmegaConf

    merged = OmegaConf.merge(dataclasses.asdict(BASES[group]()), _plain(cfg))
    out: dict[str, Any] = OmegaConf.to_container(merged, resolve=True)  # type: ignore[assignment]
    check(group, out, GROUPS[group])
    return out


def register() -> None:
    """Store the schema defaults as Hydra configs: `<group>/base`, and `base` for the root."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for group, schema in BASES.items():
        store.store(group=group, name="base", node=dataclasses.asdict(schema()), provider="rankrm")


def load_option(group: str, option: str, *overrides: str) -> Any:
    """`conf/<group>/<option>.yaml` as the runner composes it (over the group's base), plus `group.key=value`
    overrides; a DictConfig, resolved, not in struct mode."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from rankrm import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"{group}={option}", *(f"{group}.{o}" for o in overrides)])
    return OmegaConf.create(OmegaConf.to_container(cfg[group], resolve=True))


def _plain(cfg: Any) -> dict[str, Any]:
    """A DictConfig resolved to plain containers. Outside a Hydra run (tests, tools) `${hydra:...}` cannot
    resolve: the config is then checked unresolved (an interpolation passes any type check)."""
    if isinstance(cfg, Mapping) and not hasattr(cfg, "_metadata"):
        return dict(cfg)
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf
    from omegaconf.errors import InterpolationResolutionError

    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except InterpolationResolutionError as e:
        if HydraConfig.initialized():
            raise RankrmError(f"{e.full_key}: {e.msg}") from None
        return OmegaConf.to_container(cfg, resolve=False)  # type: ignore[return-value]


register()
