"""User-facing errors: raised for bad data or config, printed as one line, never a traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class RankrmError(Exception):
    """An error caused by the user's input (data, config, paths); the CLI prints it without a traceback."""


class DataError(RankrmError):
    """A malformed record. The message always names file, line and field."""

    def __init__(self, path: str, line: int | None, field: str | None, msg: str) -> None:
        self.path, self.line, self.field, self.msg = str(path), line, field, msg
        where = f"{self.path}:{line}" if line is not None else self.path
        what = f" field '{field}'" if field else ""
        super().__init__(f"{where}:{what} {msg}")


def exit_on_user_error(fn: F) -> F:
    """Wrap a CLI entry point: a RankrmError becomes `error: <message>` on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except RankrmError as e:
            print(f"rankrm: error: {e}", file=sys.stderr)
            sys.exit(2)

    return wrapper  # type: ignore[return-value]
