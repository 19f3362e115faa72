"""A real PostgreSQL server for the tests: initdb in a temp dir, listening on loopback only."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg

from tests.support import free_port

USER = "cloudassist"


def _bindir() -> Path:
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).parent
    raise RuntimeError("PostgreSQL is not installed (initdb not found); apt-get install postgresql")


class PostgresServer:
    """Lives in its own directory under the system temp dir: when the tests run as root, the
    server runs as the `postgres` user, who cannot enter pytest's private temp dirs."""

    def __init__(self) -> None:
        self.workdir = Path(tempfile.mkdtemp(prefix="cloudassist-pg-"))
        self.data = self.workdir / "data"
        self.port = free_port()
        self.bindir = _bindir()
        self.proc: subprocess.Popen[bytes] | None = None
        self._count = 0

    def _as_owner(self, argv: list[str]) -> list[str]:
        # PostgreSQL refuses to run as root: run it as the `postgres` system user then.
        return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else argv

    def start(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")
        subprocess.run(
            self._as_owner(
                [str(self.bindir / "initdb"), "-D", str(self.data), "-U", USER,
                 "--auth=trust", "--no-sync", "-E", "UTF8"]
            ),
            check=True,
            capture_output=True,
        )  # fmt: skip
        self.resume()

    def resume(self) -> None:
        """Starts the postmaster on the existing data directory (after `start` or `halt`)."""
        log = (self.workdir / "postgres.log").open("ab")
        self.proc = subprocess.Popen(
            self._as_owner(
                [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                 "-h", "127.0.0.1", "-k", str(self.workdir),
                 # Durability is not what the tests are about: speed them up.
                 "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                 "-c", "max_connections=400"]
            ),
            stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(self.dsn("postgres"), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        "PostgreSQL did not start:\n"
                        + (self.workdir / "postgres.log").read_text(errors="replace")
                    ) from None
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={database}"

    def new_database(self) -> str:
        """A fresh, empty database; returns its SQLAlchemy URL."""
        self._count += 1
        name = f"test_{os.getpid()}_{self._count}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{name}"

    def halt(self) -> None:
        """Stops the postmaster and keeps the data: `resume` starts it again."""
        if self.proc is None or self.proc.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown. With runuser in between, signal the
        # postmaster this fixture started (its pid is in postmaster.pid) directly.
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGINT)
        else:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.workdir, ignore_errors=True)


@contextlib.contextmanager
def database_url(postgres: bool) -> Iterator[str | None]:
    """The URL of a new database on a PostgreSQL started here (stopped on exit), or None
    for the server's embedded default when `postgres` is false."""
    if not postgres:
        yield None
        return
    server = PostgresServer()
    server.start()
    try:
        yield server.new_database()
    finally:
        server.stop()
