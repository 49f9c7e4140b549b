"""Where a sweep's study lives: the storage URL, its driver, opening it when many hosts start at once,
and the study lock that makes "is the budget spent? if not, take a trial" one step across hosts.

The `storage` config value is a URL, or `env:NAME` (the URL is in environment variable NAME) or
`file:PATH` (the URL is the one line of that file), so a password need not be on a command line
or in `.hydra/config.yaml`; every URL rankrm prints has its password masked (`mask`). Trial
processes get the URL in the environment (`CHILD_ENV`), never in their argv.

Hosts started at the same moment on a fresh database race to create Optuna's schema (PostgreSQL:
`UniqueViolation` on `pg_type` for `CREATE TYPE`/`CREATE TABLE`, `DuplicateTable`, a second
alembic stamp): the loser's transaction is rolled back whole, so `open_storage` retries it and
then finds the schema. `study_lock` serialises the sweep's study-level steps (create the study and
queue its first trials; re-queue dead trials, check the budget and ask) so the study never gets
more than `n_trials` trials: a PostgreSQL transaction-level advisory lock keyed by the study name
(released by the server if the holder dies), an flock on `<file>.rankrm-lock` beside an sqlite or journal file. Other
backends run without it (concurrent workers may then add up to workers-1 trials at the end).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import inspect
import logging
import os
import random
import re
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna

from rankrm.errors import RankrmError

log = logging.getLogger("rankrm.sweep")

CHILD_ENV = "RANKRM_SWEEP_STORAGE"  # the storage URL as trial processes (the pruning callback) read it
# SQLAlchemy driver -> the pip package that provides it, and the rankrm extra that installs it (if any).
DRIVERS: dict[str, tuple[str, str | None]] = {
    "psycopg": ("psycopg[binary]", "postgres"),  # what `postgresql://` means in SQLAlchemy >= 2.1
    "psycopg2": ("psycopg2-binary", None),
    "mysqldb": ("mysqlclient", None),
    "pymysql": ("PyMySQL", None),
}
# Errors of a schema-creation race (the object exists now): PostgreSQL SQLSTATEs unique_violation,
# duplicate_table, duplicate_object (psycopg 3 names it `sqlstate`, psycopg2 `pgcode`).
_RACE_SQLSTATES = {"23505", "42P07", "42710"}
OPEN_ATTEMPTS = 8


def resolve(spec: str | None, sweep_dir: Path) -> str:
    """The `storage` config value -> a storage URL: null -> sqlite in the sweep dir; `env:NAME` ->
    that variable; `file:PATH` -> the file's one line; anything else is the URL itself."""
    if not spec:
        return f"sqlite:///{(sweep_dir / 'study.db').resolve()}"
    if spec.startswith("env:"):
        name = spec[len("env:") :]
        if not os.environ.get(name):
            raise RankrmError(f"storage={spec}: environment variable {name} is not set (export {name}=<URL>)")
        return os.environ[name].strip()
    if spec.startswith("file:"):
        path = Path(spec[len("file:") :]).expanduser()
        try:
            lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip()]
        except OSError as e:
            raise RankrmError(f"storage={spec}: cannot read {path}: {e.strerror}") from e
        if len(lines) != 1:
            raise RankrmError(f"storage={spec}: {path} must hold one line, the storage URL; it has {len(lines)}")
        return lines[0]
    return spec


def mask(url: str) -> str:
    """The URL with its password (`user:PASSWORD@`, `?password=`) replaced by `***`."""
    url = re.sub(r"(://[^:/@]*:)[^@]*@", r"\1***@", url)  # SQLAlchemy's rule: the password ends at the first @
    return re.sub(r"([?&]password=)[^&]*", r"\1***", url, flags=re.IGNORECASE)


def has_password(url: str) -> bool:
    return mask(url) != url


def scrub(text: str, url: str) -> str:
    """`text` (e.g. a driver's error message) with the URL and any occurrence of its password masked."""
    from urllib.parse import unquote

    text = text.replace(url, mask(url))
    for secret in re.findall(r"://[^:/@]*:([^@]*)@", url) + re.findall(r"[?&]password=([^&]*)", url, re.IGNORECASE):
        for form in {secret, unquote(secret)} - {""}:
            text = text.replace(form, "***")
    return text


def dashboard_arg(spec: str | None, url: str) -> str:
    """How to hand this storage to `optuna-dashboard` in a shell without writing the password out:
    the variable or file it came from; a journal file by its path; else the (masked) URL."""
    if spec and spec.startswith("env:"):
        return f'"${spec[len("env:") :]}"'
    if spec and spec.startswith("file:"):
        return f'"$(cat {spec[len("file:") :]})"'
    return url[len("journal:") :] if url.startswith("journal:") else mask(url)


def check_driver(url: str) -> None:
    """Fail in one line when the URL's database is unknown or its driver is not installed."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        dialect = make_url(url).get_dialect()
    except NoSuchModuleError as e:
        scheme = url.split(":", 1)[0]
        raise RankrmError(
            f"storage {mask(url)!r}: {scheme!r} is not a database SQLAlchemy knows "
            "(postgresql://, mysql://, sqlite:///, or journal:<path>)"
        ) from e
    except ArgumentError as e:
        raise RankrmError(f"storage {mask(url)!r}: not a storage URL ({e})") from e
    try:
        dialect.import_dbapi()
    except ImportError as e:
        package, extra = DRIVERS.get(dialect.driver, (e.name or dialect.driver, None))
        how = f"pip install 'rankrm[{extra}]' (or: pip install '{package}')" if extra else f"pip install '{package}'"
        raise RankrmError(f"storage {mask(url)!r} needs the {dialect.driver} driver: {how}") from e


def _is_creation_race(e: Exception) -> bool:
    orig = getattr(e, "orig", None)
    return (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) in _RACE_SQLSTATES


def _one_line(e: Exception) -> str:
    """The driver's message on one line, without SQLAlchemy's "(Background on this error at: ...)"."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip() and not ln.startswith("(Background on this error")]
    return " ".join(lines)


def _with_retry(make: Callable[[], Any], url: str) -> Any:
    """`make()`, again after a jittered wait while it loses a schema-creation race to another host."""
    attempts = OPEN_ATTEMPTS
    for attempt in range(1, attempts + 1):
        try:
            return make()
        except Exception as e:  # sqlalchemy/driver errors: bad URL, unreachable server, refused login
            if attempt < attempts and _is_creation_race(e):
                log.info("storage %s: another worker is creating the schema; retrying", mask(url))
                time.sleep(random.uniform(0.1, 0.5) * attempt)  # jitter: the losers must not collide again
                continue
            raise RankrmError(f"cannot open Optuna storage {mask(url)!r}: {scrub(_one_line(e), url)}") from e
    raise AssertionError("unreachable")


def open_storage(
    url: str, heartbeat_s: int | None = None, on_stale: Callable[[optuna.Study, Any], None] | None = None
) -> optuna.storages.BaseStorage:
    """`journal:<path>` -> JournalStorage(JournalFileBackend); anything else -> RDBStorage (sqlite,
    postgresql, mysql). With `heartbeat_s`, a RUNNING trial whose worker stopped beating for
    4 * heartbeat_s (its host died) is failed and handed to `on_stale` by the next worker that looks."""
    if url.startswith("journal:"):
        path = Path(url[len("journal:") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    check_driver(url)
    if url.startswith("sqlite:///"):
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat_s:
        # Optuna < 4.9 names the callback argument failed_trial_callback.
        arg = "heartbeat_stale_trial_callback"
        if arg not in inspect.signature(optuna.storages.RDBStorage).parameters:
            arg = "failed_trial_callback"
        kwargs = {"heartbeat_interval": int(heartbeat_s), "grace_period": 4 * int(heartbeat_s), arg: on_stale}
    # sqlite: wait for the file lock instead of failing when several workers write at once.
    engine = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else None

    def make() -> optuna.storages.RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)

    return _with_retry(make, url)


def _lock_key(study_name: str) -> int:
    """A signed 64-bit advisory-lock key for the study (same on every host)."""
    return int.from_bytes(hashlib.sha256(f"rankrm-sweep:{study_name}".encode()).digest()[:8], "big", signed=True)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    # Not `<path>.lock`: Optuna's journal backend makes that a symlink for its own lock.
    with open(path.with_name(path.name + ".rankrm-lock"), "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield  # closing the file releases the lock (also when the process dies)


@contextlib.contextmanager
def _advisory_lock(url: str, study_name: str) -> Iterator[None]:
    import sqlalchemy

    engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.begin() as conn:  # released at the end of this transaction, or when the connection drops
            conn.execute(sqlalchemy.text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(study_name)})
            yield
    finally:
        engine.dispose()


def has_study_lock(url: str) -> bool:
    """Whether `study_lock` really locks this storage (PostgreSQL, sqlite, journal file)."""
    return url.startswith(("journal:", "sqlite:///")) or url.split(":", 1)[0].split("+", 1)[0] == "postgresql"


def study_lock(url: str, study_name: str) -> contextlib.AbstractContextManager[None]:
    """A lock every worker of the study (on any host) agrees on; a no-op where none is known."""
    if url.startswith("journal:"):
        return _file_lock(Path(url[len("journal:") :]).expanduser())
    if url.startswith("sqlite:///"):
        return _file_lock(Path(url[len("sqlite:///") :]))
    return _advisory_lock(url, study_name) if has_study_lock(url) else contextlib.nullcontext()
