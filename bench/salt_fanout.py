"""Fan-out latency with SaltStack: `cmd.run 'echo hi'` on N real salt-minions, for comparison.

The salt counterpart of bench/fanout.py. Starts one salt-master and the minions on 127.0.0.1
only (free ports, every config/pki/cache/log/sock dir in a temp dir, auto_accept, default
transport and minion settings otherwise), waits until all N answer test.ping, then times
`--runs` fan-outs of LocalClient.cmd('*', 'cmd.run', ['echo hi']) until every minion has
returned "hi", and prints one JSON line of figures per count. Salt runs only in its own venv,
bench/.salt-venv, created on first use; the timing is done by bench/salt_timer.py under that
venv's interpreter, so salt's CLI start-up is not counted. Usage:

    .venv/bin/python bench/salt_fanout.py --agents 1,10,50 --runs 50
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fanout import percentile

BENCH = Path(__file__).resolve().parent
SALT_VENV = BENCH / ".salt-venv"
SALT_PYTHON = SALT_VENV / "bin" / "python"
SALT_TIMER = BENCH / "salt_timer.py"
SALT_REQUIREMENT = "salt>=3007.1"  # 3008.4 tested, Python 3.11
HOST = "127.0.0.1"


def salt_version() -> str | None:
    if not SALT_PYTHON.exists():
        return None
    probe = subprocess.run(
        [str(SALT_PYTHON), "-c", "import salt.version; print(salt.version.__version__)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return probe.stdout.strip() if probe.returncode == 0 else None


def ensure_salt_venv() -> str:
    version = salt_version()
    if version is not None:
        return version
    print(f"installing {SALT_REQUIREMENT} into {SALT_VENV} ...", file=sys.stderr, flush=True)
    if not SALT_PYTHON.exists():
        subprocess.run(["python3", "-m", "venv", str(SALT_VENV)], check=True, timeout=300)
    subprocess.run(
        [str(SALT_PYTHON), "-m", "pip", "install", "--quiet", SALT_REQUIREMENT],
        check=True,
        timeout=1800,
    )
    version = salt_version()
    if version is None:
        raise RuntimeError(f"salt does not import in {SALT_VENV} after installing it")
    return version


def free_ports(count: int) -> list[int]:
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def write_config(path: Path, config: dict[str, Any]) -> None:
    # JSON is valid YAML, and needs no quoting rules of its own.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(config, indent=2) + "\n")


def common_config(root: Path) -> dict[str, Any]:
    return {
        "user": "root",
        "ipv6": False,
        "root_dir": str(root),
        "pki_dir": str(root / "pki"),
        "cachedir": str(root / "cache"),
        "sock_dir": str(root / "sock"),
        "extension_modules": str(root / "extmods"),
        "pidfile": str(root / "salt.pid"),
        "log_file": str(root / "salt.log"),
        "log_level": "warning",
        "log_level_logfile": "info",
        "enable_gpu_grains": False,
    }


class SaltProcess:
    """A salt daemon in its own session (so its whole process group can be ended), by pid."""

    def __init__(self, name: str, args: list[str], root: Path) -> None:
        self.name = name
        self.root = root
        self.output = root / "output.log"
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def exited(self) -> bool:
        # WNOWAIT leaves a dead leader unreaped, so its pid (the group id) cannot be reused
        # before the group is killed in stop().
        if self.proc.returncode is not None:
            return True
        flags = os.WEXITED | os.WNOHANG | os.WNOWAIT
        return os.waitid(os.P_PID, self.proc.pid, flags) is not None

    def signal_group(self, signum: int) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signum)

    def reap(self) -> None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)

    def logs(self) -> str:
        parts = []
        for path in (self.output, self.root / "salt.log"):
            if path.exists():
                parts.append(f"--- {self.name} {path.name} (tail) ---\n")
                parts.append("\n".join(path.read_text(errors="replace").splitlines()[-20:]))
        return "\n".join(parts)


def stop_all(daemons: list[SaltProcess], grace: float = 15.0) -> None:
    for daemon in daemons:
        daemon.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and not all(d.exited() for d in daemons):
        time.sleep(0.1)
    for daemon in daemons:
        daemon.signal_group(signal.SIGKILL)  # also whatever the daemon left in its group
        daemon.reap()


def wait_for_ports(master: SaltProcess, ports: list[int], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if master.exited():
            raise RuntimeError(f"salt-master exited at start-up\n{master.logs()}")
        try:
            for port in ports:
                with socket.create_connection((HOST, port), timeout=1):
                    pass
        except OSError:
            time.sleep(0.2)
            continue
        return
    raise RuntimeError(f"salt-master did not listen on {ports} in {timeout} s\n{master.logs()}")


def start_master(workdir: Path, publish_port: int, ret_port: int) -> tuple[SaltProcess, Path]:
    root = workdir / "master"
    config = common_config(root) | {
        "interface": HOST,
        "publish_port": publish_port,
        "ret_port": ret_port,
        "auto_accept": True,
        "worker_threads": 2,
        "key_logfile": str(root / "key.log"),
        "file_roots": {"base": [str(root / "srv")]},
        "pillar_roots": {"base": [str(root / "pillar")]},
        "fileserver_backend": ["roots"],
    }
    write_config(root / "conf" / "master", config)
    master = SaltProcess(
        "salt-master",
        [str(SALT_VENV / "bin" / "salt-master"), "-c", str(root / "conf")],
        root,
    )
    return master, root / "conf" / "master"


def start_minion(workdir: Path, minion_id: str, publish_port: int, ret_port: int) -> SaltProcess:
    root = workdir / minion_id
    config = common_config(root) | {
        "id": minion_id,
        "master": HOST,
        "master_port": ret_port,
        "publish_port": publish_port,
        "acceptance_wait_time": 1,
        "acceptance_wait_time_max": 2,
        "random_startup_delay": 0,
        "enable_fqdns_grains": False,
        "mine_enabled": False,
    }
    write_config(root / "conf" / "minion", config)
    return SaltProcess(
        minion_id,
        [str(SALT_VENV / "bin" / "salt-minion"), "-c", str(root / "conf")],
        root,
    )


def measure(
    master_config: Path, minions: list[SaltProcess], runs: int, timeout: float
) -> list[float]:
    ready_timeout = 60.0 + 3.0 * len(minions)
    result = subprocess.run(
        [
            str(SALT_PYTHON),
            str(SALT_TIMER),
            "--config",
            str(master_config),
            "--ids",
            ",".join(m.name for m in minions),
            "--runs",
            str(runs),
            "--timeout",
            str(timeout),
            "--ready-timeout",
            str(ready_timeout),
        ],
        capture_output=True,
        text=True,
        timeout=ready_timeout + (runs + 1) * (timeout + 15.0) + 60.0,
        check=False,
    )
    if result.returncode != 0:
        dead = [m.logs() for m in minions if m.exited()]
        raise RuntimeError(
            f"salt_timer failed ({result.returncode}):\n{result.stderr[-4000:]}\n" + "\n".join(dead)
        )
    return json.loads(result.stdout.strip().splitlines()[-1])["times_ms"]


def raise_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="1,10,50", help="comma-separated minion counts")
    parser.add_argument("--runs", type=int, default=50, help="fan-outs per minion count")
    parser.add_argument("--timeout", type=float, default=60.0, help="cmd.run timeout, seconds")
    args = parser.parse_args()
    # Ascending: every count reuses the minions already started, and '*' targets them all.
    counts = sorted({int(n) for n in args.agents.split(",")})
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    version = ensure_salt_venv()
    with tempfile.TemporaryDirectory(prefix="salt-bench-") as tmp:
        workdir = Path(tmp)
        publish_port, ret_port = free_ports(2)
        master, master_config = start_master(workdir, publish_port, ret_port)
        minions: list[SaltProcess] = []
        try:
            wait_for_ports(master, [publish_port, ret_port])
            for count in counts:
                while len(minions) < count:
                    minion_id = f"m-bench-{len(minions):03d}"
                    minions.append(start_minion(workdir, minion_id, publish_port, ret_port))
                ms = measure(master_config, minions[:count], args.runs, args.timeout)
                print(
                    json.dumps(
                        {
                            "benchmark": "salt_fanout",
                            "agents": count,
                            "runs": len(ms),
                            "p50_ms": round(percentile(ms, 0.50), 1),
                            "p95_ms": round(percentile(ms, 0.95), 1),
                            "p99_ms": round(percentile(ms, 0.99), 1),
                            "mean_ms": round(statistics.fmean(ms), 1),
                            "max_ms": round(max(ms), 1),
                            "salt_version": version,
                            "machine": f"{platform.machine()} {platform.python_version()}",
                        }
                    ),
                    flush=True,
                )
        finally:
            stop_all([*minions, master])


if __name__ == "__main__":
    main()
