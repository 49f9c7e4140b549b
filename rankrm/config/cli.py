"""A runner's command line, composed once before Hydra runs it, so that a composition error (an
unknown key, an unknown option of a group, a bad override) ends in one `rankrm: error:` line like
every other config error, instead of Hydra's multi-line report. About 0.2 s; the values themselves
are checked by `rankrm.config.validate` in preflight, once Hydra has composed the run's config.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable
from typing import Any

from rankrm.errors import RankrmError, exit_on_user_error


def hydra_runner(task: Callable[[Any], Any], config_name: str) -> Callable[[], None]:
    """The entry point of a Hydra runner over rankrm/conf/<config_name>.yaml: the command line is
    checked first (one error line), then `hydra.main` runs `task` as usual."""
    import hydra

    from rankrm import CONF_DIR

    run = hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)(task)

    def main() -> None:
        exit_on_user_error(check_command_line)(config_name, sys.argv[1:])
        run()

    return main


def check_command_line(config_name: str, argv: list[str]) -> None:
    """Compose `argv` as Hydra would; raise one RankrmError line if it cannot be composed. Hydra's
    own flags (--help, --cfg, --multirun, ...) are left to Hydra, which then reports its own way."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from rankrm import CONF_DIR

    parsed = _parse(argv, config_name)
    if parsed is None:
        return
    name, overrides = parsed
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            cfg = compose(name, overrides=overrides, return_hydra_config=True)
            loader = GlobalHydra.instance().config_loader()
            for group, choice in cfg.hydra.runtime.choices.items():
                # An optional group (experiment) with a missing option is silently skipped by Hydra.
                options = loader.get_group_options(group, config_name=name, overrides=overrides)
                if choice is not None and not group.startswith("hydra/") and choice not in options:
                    raise RankrmError(_no_option(group, choice, options))
    except (HydraException, OmegaConfBaseException) as e:
        raise RankrmError(one_line(e, overrides)) from None


def _parse(argv: list[str], name: str) -> tuple[str, list[str]] | None:
    """(config name, overrides) from a command line; None if it has flags this check leaves to Hydra."""
    overrides: list[str] = []
    args = iter(argv)
    for arg in args:
        flag, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if flag in ("-cn", "--config-name"):
            name = value if eq else next(args, name)
        elif flag in ("-cd", "--config-dir"):  # as hydra.main does: one more dir on the search path
            if any(o.startswith("hydra.searchpath") for o in argv):
                return None
            overrides.append(f"hydra.searchpath=[file://{os.path.abspath(value if eq else next(args, '.'))}]")
        elif arg.startswith("-"):
            return None
        else:
            overrides.append(arg)
    return name, overrides


def _no_option(group: str, option: str, options: list[str]) -> str:
    choices = [o for o in options if o != "base"]  # `base` is the schema's defaults, not a choice
    match = difflib.get_close_matches(option, choices, n=1)
    hint = f" (did you mean {match[0]}?)" if match else ""
    return f"{group}={option} is not an option of {group}{hint}; choose one of: {', '.join(choices)}"


def one_line(e: BaseException, overrides: list[str]) -> str:
    """Hydra's composition error as one line: the unknown option or key named with what is allowed."""
    from hydra.errors import MissingConfigException

    if isinstance(e, MissingConfigException) and e.missing_cfg_file and e.options is not None:
        group, _, option = e.missing_cfg_file.rpartition("/")
        return _no_option(group, option, e.options)
    key = getattr(e.__cause__, "full_key", None)
    if key and "not in struct" in str(e.__cause__):
        value = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == key), "")
        parent, _, name = key.rpartition(".")
        known = _known_keys(parent)
        hint = difflib.get_close_matches(name, known, n=1)
        return (
            f"unknown key {key}={value}"
            + (f" (did you mean {parent + '.' if parent else ''}{hint[0]}?)" if hint else "")
            + (f"; {parent or 'train.yaml'} has: {', '.join(known)}" if known else "")
            + f" (to add a new key on purpose: +{key}={value})"
        )
    lines = [line.strip() for part in (e, e.__cause__) if part is not None for line in str(part).splitlines()]
    skip = ("full_key:", "object_type=", "reference_type=", "See https://hydra.cc", "Config search path", "provider=")
    return " ".join(line for line in lines if line and not line.startswith(skip))


def _known_keys(path: str) -> list[str]:
    """The schema's fields at a dotted path (`backbone`, `backbone.lora`), [] where no schema names them."""
    import dataclasses
    from typing import get_type_hints

    from rankrm.config.schema import BASES, GROUPS

    parts = path.split(".") if path else []
    schema: Any = BASES.get(parts[0], GROUPS.get(parts[0])) if parts else BASES[None]
    for part in parts[1:]:
        schema = get_type_hints(schema, include_extras=True).get(part) if dataclasses.is_dataclass(schema) else None
    if not dataclasses.is_dataclass(schema):
        return []
    return [f.name for f in dataclasses.fields(schema) if not f.name.startswith("_")]
