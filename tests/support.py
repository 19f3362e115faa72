"""Real processes for the tests: a cloudassist server and agents on loopback, in temp dirs."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import grpc
from grpc import aio

from cloudassist.client import auth
from cloudassist.v1 import admin_pb2, admin_pb2_grpc, instance_pb2, instance_pb2_grpc

BIN = Path(sys.executable).parent
START_TIMEOUT = 30.0


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls `condition` (for state owned by another process, which cannot be awaited)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


class Process:
    """A child process whose output goes to a log file; stopped by pid only."""

    def __init__(
        self,
        argv: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> None:
        self.argv = argv
        self.log_path = log_path
        self.env = env
        # The directory it starts in (relative paths in its flags are relative to it).
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(self.env or {})},
            cwd=self.cwd,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, sig: signal.Signals = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


# Set by tests/conftest.py when the suite runs against PostgreSQL: makes a fresh database.
database_factory: Callable[[], str] | None = None


class ServerProcess(Process):
    def __init__(
        self, workdir: Path, *flags: str, ca: Path | None = None, db_url: str | None = None
    ) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir = workdir
        self.db_url = db_url or (database_factory() if database_factory else None)
        self.ready_file = workdir / "ready.json"
        # The CA of the server's TLS certificate, when it serves TLS.
        self.ca = ca
        self.port = 0
        self.agent_port = 0
        # Prometheus /metrics, when started with --metrics-listen (0: not served).
        self.metrics_port = 0
        # The web console, when started with --console-listen (0: not served).
        self.console_port = 0
        self._activations: dict[str, tuple[str, str]] = {}
        super().__init__(
            [
                str(BIN / "cloudassist-server"),
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                str(workdir),
                "--ready-file",
                str(self.ready_file),
                *(["--db", self.db_url] if self.db_url else []),
                *flags,
            ],
            workdir / "server.log",
        )

    def start(self) -> None:
        self.ready_file.unlink(missing_ok=True)
        if self.port:
            # A restart keeps the address the agents know.
            self.argv[self.argv.index("--listen") + 1] = f"127.0.0.1:{self.port}"
        super().start()

        def ready() -> bool:
            if not self.running():
                raise RuntimeError(f"server exited early:\n{self.log()}")
            return self.ready_file.exists()

        wait_until(ready, START_TIMEOUT, "the server to listen")
        ready = json.loads(self.ready_file.read_text())
        self.port = ready["port"]
        self.agent_port = ready["agent_port"]
        self.metrics_port = ready.get("metrics_port", 0)
        self.console_port = ready.get("console_port", 0)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def agent_address(self) -> str:
        return f"127.0.0.1:{self.agent_port}"

    def sync_channel(self) -> grpc.Channel:
        if self.ca is None:
            return grpc.insecure_channel(self.address)
        credentials = grpc.ssl_channel_credentials(root_certificates=self.ca.read_bytes())
        return grpc.secure_channel(self.address, credentials)

    @property
    def admin_key(self) -> str:
        """The admin API key the server wrote on its first start."""
        return (self.workdir / "admin.key").read_text().strip()

    @property
    def metadata(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.admin_key}")]

    def activation(self, region: str = "cn-hangzhou") -> tuple[str, str]:
        """An activation (id, code) for agents of `region`, made once per region."""
        if region not in self._activations:
            with self.sync_channel() as channel:
                response = admin_pb2_grpc.AdminServiceStub(channel).CreateActivation(
                    admin_pb2.CreateActivationRequest(region_id=region, max_registrations=1000),
                    metadata=self.metadata,
                )
            self._activations[region] = (
                response.activation.activation_id,
                response.activation_code,
            )
        return self._activations[region]

    @property
    def db_path(self) -> Path:
        return self.workdir / "cloudassist.db"

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        """Rows of a read-only query, straight from the server's database (SQLite or
        PostgreSQL)."""
        if self.db_url is None:
            with sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True) as db:
                return list(db.execute(sql).fetchall())
        import psycopg

        with psycopg.connect(self.db_url.replace("postgresql+psycopg://", "postgresql://")) as db:
            return list(db.execute(sql).fetchall())  # type: ignore[arg-type]

    def row_counts(self) -> dict[str, int]:
        """Rows per table, read straight from the database."""
        tables = [
            "commands",
            "invocations",
            "invocation_instances",
            "records",
            "output_chunks",
            "idempotency_tokens",
        ]
        return {t: self.query(f"SELECT count(*) FROM {t}")[0][0] for t in tables}

    def resource_counts(self) -> dict[str, int]:
        """Rows per table of what a request creates, leaving out output, which invocations
        made before may still be storing."""
        return {t: n for t, n in self.row_counts().items() if t != "output_chunks"}


class AgentProcess(Process):
    """An agent registered with the admin's activation of `region`, or with `activation` (id,
    code) of another account, whose instances `api_key` (that account's key) can see."""

    def __init__(
        self,
        server: ServerProcess,
        instance_id: str,
        workdir: Path,
        region: str = "cn-hangzhou",
        activation: tuple[str, str] | None = None,
        api_key: str | None = None,
    ) -> None:
        self.server = server
        self.instance_id = instance_id
        self.region = region
        self.activation = activation
        self.api_key = api_key
        self.state_dir = workdir / f"agent-{instance_id}"
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Connect through this address (a proxy) instead of the server's own.
        self.via: str | None = None
        # More flags (TLS files, ...).
        self.extra: list[str] = []
        super().__init__([], self.state_dir.with_suffix(".log"))

    def start(self) -> None:
        self.start_process()
        self.wait_online(True)

    def start_process(self) -> None:
        activation_id, activation_code = self.activation or self.server.activation(self.region)
        # The server's port is known only once it runs.
        self.argv = [
            str(BIN / "cloudassist-agent"),
            "--server",
            self.via or self.server.agent_address,
            "--instance-id",
            self.instance_id,
            "--region",
            self.region,
            "--activation-id",
            activation_id,
            "--activation-code",
            activation_code,
            "--state-dir",
            str(self.state_dir),
            "--kill-grace",
            "2",
            "--max-backoff",
            "2",
            *self.extra,
        ]
        super().start()

    def wait_online(self, online: bool) -> None:
        metadata = (
            [("authorization", f"Bearer {self.api_key}")] if self.api_key else self.server.metadata
        )
        with self.server.sync_channel() as channel:
            stub = instance_pb2_grpc.InstanceServiceStub(channel)

            def reached() -> bool:
                if online and not self.running():
                    raise RuntimeError(f"agent exited early:\n{self.log()}")
                response = stub.DescribeInstances(
                    instance_pb2.DescribeInstancesRequest(
                        region_id=self.region, instance_ids=[self.instance_id]
                    ),
                    metadata=metadata,
                )
                return bool(response.instances) and response.instances[0].online is online

            try:
                wait_until(reached, START_TIMEOUT, f"{self.instance_id} online={online}")
            except TimeoutError as timeout:
                # Both sides' logs say why (they are gone with the temp dir on CI).
                raise TimeoutError(
                    f"{timeout}\n--- agent log (end) ---\n{self.log()[-4000:]}"
                    f"\n--- server log (end) ---\n{self.server.log()[-8000:]}"
                ) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class TcpProxy(Process):
    """tests/tcp_proxy.py in its own process: killing it cuts every connection through it."""

    def __init__(self, workdir: Path, target_port: int, idle_seconds: float = 0.0) -> None:
        self.port = free_port()
        self.target_port = target_port
        super().__init__(
            [
                sys.executable,
                str(Path(__file__).with_name("tcp_proxy.py")),
                str(self.port),
                str(target_port),
                str(idle_seconds),
            ],
            workdir / f"proxy-{self.port}.log",
        )

    def start(self) -> None:
        # The log is appended to: a restart waits for a "listening" line of its own.
        earlier = self.log().count("listening")
        super().start()

        def listening() -> bool:
            if not self.running():
                raise RuntimeError(f"proxy exited early:\n{self.log()}")
            return self.log().count("listening") > earlier

        wait_until(listening, START_TIMEOUT, "the proxy to listen")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def children_of(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def process_gone(pid: int) -> bool:
    """True when `pid` no longer runs (absent, or a zombie waiting for its parent to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] in ("Z", "X")


def client_channel(server: ServerProcess, token: str | None = None) -> aio.Channel:
    """An aio channel to the server that sends an API key (the admin's by default)."""
    return auth.channel(server.address, token or server.admin_key, server.ca)
