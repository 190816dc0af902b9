"""A throwaway PostgreSQL cluster for tests and benchmarks: initdb + pg_ctl in a temp folder.

Nothing is shared with a system PostgreSQL: the cluster lives in its own folder, listens on a
free loopback port (its unix socket in the same folder), runs with `fsync=off` because its
data is thrown away, and is stopped with bounded waits. initdb refuses to run as root, so
under root the server runs as the `postgres` system user (created if missing).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import psycopg

from campaign.devtools.catcher import free_port

START_TIMEOUT = 60  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30
SERVER_USER = "postgres"
# Throwaway data: nothing is flushed to disk. Benchmarks turn `synchronous_commit` back on
# so that a commit at least reaches the OS, as SQLite's `synchronous=NORMAL` does.
FAST_SETTINGS = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
}


def find_bindir() -> Path | None:
    """The newest PostgreSQL server binaries installed (Debian layout first, then PATH)."""

    def version(initdb: str) -> int:
        name = Path(initdb).parts[-3]
        return int(name) if name.isdigit() else 0

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _server_user() -> pwd.struct_passwd | None:
    """Who runs the server: None means "this process" (not root)."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", SERVER_USER], check=True, timeout=30
        )
        return pwd.getpwnam(SERVER_USER)


@dataclass
class PgCluster:
    """One running throwaway cluster; `database()` hands out fresh, empty databases."""

    bindir: Path
    root: Path
    port: int
    user: pwd.struct_passwd | None
    settings: dict[str, str]

    @property
    def data(self) -> Path:
        return self.root / "data"

    def _run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self.user is not None:
            command = ["runuser", "-u", self.user.pw_name, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)

    @classmethod
    def start(cls, bindir: Path, **settings: str) -> PgCluster:
        """initdb and start a server; `settings` override `FAST_SETTINGS` (postgresql.conf)."""
        root = Path(tempfile.mkdtemp(prefix="campaign-pg-"))
        user = _server_user()
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
        cluster = cls(bindir, root, free_port(), user, {**FAST_SETTINGS, **settings})
        try:
            cluster._init_and_start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _init_and_start(self) -> None:
        done = self._run(
            "initdb",
            "-D",
            str(self.data),
            "--auth=trust",
            "--username=postgres",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        options = " ".join(
            [
                f"-p {self.port} -c listen_addresses=127.0.0.1",
                f"-c unix_socket_directories={self.root}",
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ]
        )
        done = self._run(
            "pg_ctl",
            "start",
            "-D",
            str(self.data),
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            str(START_TIMEOUT),
            "-o",
            options,
            timeout=START_TIMEOUT + 10,
        )
        if done.returncode != 0:
            log = self.root / "server.log"
            raise RuntimeError(
                f"pg_ctl start failed:\n{done.stdout}\n{done.stderr}\n"
                f"{log.read_text() if log.exists() else ''}"
            )

    def url(self, database: str = "postgres") -> str:
        """A SQLAlchemy URL for the engine (psycopg 3 driver)."""
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def _admin(self) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            dbname="postgres",
            autocommit=True,
            connect_timeout=10,
        )

    def database(self) -> str:
        """Create a fresh empty database and return its URL."""
        name = f"t_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        return self.url(name)

    def drop(self, url: str) -> None:
        """Drop a database made by `database()`, disconnecting whoever is still on it."""
        name = url.rsplit("/", 1)[1]
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (fast, then immediate) and delete its folder."""
        if (self.data / "postmaster.pid").exists():
            for mode in ("fast", "immediate"):
                try:
                    done = self._run(
                        "pg_ctl",
                        "stop",
                        "-D",
                        str(self.data),
                        "-m",
                        mode,
                        "-w",
                        "-t",
                        str(STOP_TIMEOUT),
                        timeout=STOP_TIMEOUT + 10,
                    )
                except subprocess.TimeoutExpired:
                    continue
                if done.returncode == 0:
                    break
        shutil.rmtree(self.root, ignore_errors=True)
