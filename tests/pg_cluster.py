"""A throwaway PostgreSQL cluster for tests: `initdb` in a temp dir, a free port, the socket in that dir.

    with Cluster.start() as pg:              # pytest.skip(...) first when no server binaries: Cluster.missing()
        url = pg.create_database("sweep")    # postgresql://rankrm:<password>@127.0.0.1:<port>/sweep
        pg.socket_url("sweep")               # postgresql://postgres@/sweep?host=<dir>&port=<port>

TCP logins need the password (scram-sha-256) of role `rankrm`, so a test sees whether a URL's
password really reached the server; the unix socket trusts the `postgres` superuser (used for
setup only). PostgreSQL refuses to run as root: as root the cluster belongs to the `postgres`
user and the binaries run through `runuser`. Stopped (fast shutdown) and deleted on exit.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INSTALL_HINT = "PostgreSQL server binaries not found (initdb, pg_ctl): apt-get install postgresql"
ROLE = "rankrm"


def _bin_dir() -> Path | None:
    """Where initdb and pg_ctl live: on PATH, else Debian's /usr/lib/postgresql/<newest>/bin."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self, root: Path, port: int, password: str, as_user: list[str]) -> None:
        self.root, self.port, self.password, self._as_user = root, port, password, as_user
        self.data = root / "data"

    @staticmethod
    def missing() -> str | None:
        """Why no cluster can be started here (one line), or None."""
        if _bin_dir() is None:
            return INSTALL_HINT
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                return "running as root and there is no `postgres` user to own the cluster: apt-get install postgresql"
        return None

    @classmethod
    def start(cls) -> Cluster:
        root = Path(tempfile.mkdtemp(prefix="rankrm-pg-"))  # short path: the socket name must fit 107 bytes
        as_user: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(root, user.pw_uid, user.pw_gid)
            as_user = ["runuser", "-u", "postgres", "--"]
        password = secrets.token_urlsafe(12)
        pg = cls(root, _free_port(), password, as_user)
        pg._run("initdb", "-D", pg.data, "-U", "postgres", "--auth-local=trust", "--auth-host=trust", "-E", "UTF8")
        opts = f"-p {pg.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        pg._run("pg_ctl", "-D", pg.data, "-o", opts, "-l", root / "log", "-w", "start")
        pg.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{password}'")
        # Only now (the role has its password) do TCP logins need one.
        (pg.data / "pg_hba.conf").write_text(_HBA)
        pg._run("pg_ctl", "-D", pg.data, "reload")
        return pg

    def _run(self, exe: str, *args: object) -> str:
        cmd = [*self._as_user, str(_bin_dir() / exe), *map(str, args)]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=self.root)
        if r.returncode:
            raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def sql(self, statement: str, db: str = "postgres") -> str:
        """Run one statement as the superuser over the socket (psql of the same installation)."""
        return self._run("psql", "-h", self.root, "-p", self.port, "-U", "postgres", "-d", db, "-qAtc", statement)

    def create_database(self, name: str) -> str:
        """A fresh database owned by role `rankrm` -> its TCP URL with the password."""
        self.sql(f"CREATE DATABASE {name} OWNER {ROLE}")
        return f"postgresql://{ROLE}:{self.password}@127.0.0.1:{self.port}/{name}"

    def socket_url(self, name: str) -> str:
        """The URL of database `name` over the unix socket (query parameters: host, port)."""
        return f"postgresql://{ROLE}@/{name}?host={self.root}&port={self.port}"

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", self.data, "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# Socket: trusted (setup, and socket URLs without a password); TCP: role passwords (scram).
_HBA = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n"
