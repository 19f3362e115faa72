"""The deployment artefacts, for real: deploy/kubernetes/ against the Kubernetes schemas, the
systemd units' ExecStart and environment run as systemd would run them (a server, an agent, a
RunCommand, a graceful stop), `cloudassist-agent install-service`, and --version."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.metadata
import os
import re
import shutil
import signal
import subprocess
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from cloudassist.agent import config as agent_config
from cloudassist.agent.install_service import (
    DEFAULT_ENV_FILE,
    PACKAGED_AGENT,
    agent_environment,
    render_env_file,
    render_unit,
)
from cloudassist.server import config as server_config
from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc, instance_pb2, instance_pb2_grpc
from tests.integration.helpers import REGION, results, run, watch
from tests.support import BIN, AgentProcess, Process, ServerProcess, client_channel
from tests.systemd import read_env_file, read_unit

ROOT = Path(__file__).resolve().parents[2]
SYSTEMD = ROOT / "deploy" / "systemd"
KUBERNETES = ROOT / "deploy" / "kubernetes"
SERVER_UNIT = SYSTEMD / "cloudassist-server.service"
AGENT_UNIT = SYSTEMD / "cloudassist-agent.service"
# Where the units expect the programs: a virtualenv in /opt. Here: this venv.
PACKAGED_BIN = str(PACKAGED_AGENT.parent)
# The oldest Kubernetes the manifests are for (preStop sleep, gRPC probes), and a recent one.
KUBERNETES_VERSIONS = ("1.30", "1.35")


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(KUBERNETES.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


MANIFESTS = dict(_manifests())


def _manifest(kind: str, name: str) -> dict[str, Any]:
    matching = [d for d in MANIFESTS.values() if (d["kind"], d["metadata"]["name"]) == (kind, name)]
    assert len(matching) == 1, f"one {kind} {name} in deploy/kubernetes/"
    return matching[0]


def _pod(kind: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The pod spec of a workload and its one container."""
    spec = _manifest(kind, name)["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    return spec, container


def _variables(parser: argparse.ArgumentParser, prefix: str) -> set[str]:
    """The environment variable of every flag (`--tag` reads the plural TAGS)."""
    names = set()
    for action in parser._actions:
        for option in action.option_strings:
            if option.startswith("--") and option not in ("--help", "--version"):
                flag = "tags" if option == "--tag" else option[2:]
                names.add(prefix + flag.upper().replace("-", "_"))
    return names


SERVER_VARIABLES = _variables(server_config.build_parser(), server_config.ENV_PREFIX)
AGENT_VARIABLES = _variables(agent_config.build_parser(), agent_config.ENV_PREFIX)


def _seconds(text: str) -> float:
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(s?)", text)
    assert match, f"a plain number of seconds, not {text!r}"
    return float(match[1])


def _require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is needed to check the systemd units (Debian package: systemd)")
    return path


# Kubernetes ------------------------------------------------------------------------------


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_is_valid_kubernetes(name: str, version: str) -> None:
    """Strict: a misspelt or misplaced field fails too, not only a wrong type."""
    try:
        kubernetes_validate.validate(MANIFESTS[name], version, strict=True)
    except kubernetes_validate.ValidationError as error:
        pytest.fail(f"{name} is not valid for Kubernetes {version}: {error}")


def test_the_manifests_are_the_server_service_and_agent() -> None:
    kinds = {(d["kind"], d["metadata"]["name"]) for d in MANIFESTS.values()}
    assert {
        ("Namespace", "cloudassist"),
        ("Deployment", "cloudassist-server"),
        ("Service", "cloudassist-server"),
        ("DaemonSet", "cloudassist-agent"),
    } <= kinds
    namespaced = [d for d in MANIFESTS.values() if d["kind"] != "Namespace"]
    assert {d["metadata"]["namespace"] for d in namespaced} == {"cloudassist"}


def test_the_service_port_is_grpc_and_the_probes_ask_grpc_health() -> None:
    (port,) = _manifest("Service", "cloudassist-server")["spec"]["ports"]
    assert (port["name"], port["appProtocol"]) == ("grpc", "grpc")
    _, container = _pod("Deployment", "cloudassist-server")
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert port["targetPort"] == "grpc"
    data = _manifest("ConfigMap", "cloudassist-server")["data"]
    assert data["CLOUDASSIST_LISTEN"].endswith(f":{ports['grpc']}")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"], probe
    # Prometheus scrapes the port --metrics-listen serves.
    assert data["CLOUDASSIST_METRICS_LISTEN"].endswith(f":{ports['metrics']}")


def test_each_new_pod_migrates_the_database_first() -> None:
    deployment = _manifest("Deployment", "cloudassist-server")
    pod = deployment["spec"]["template"]["spec"]
    (migrate,) = pod["initContainers"]
    (server,) = pod["containers"]
    assert migrate["command"] == [server["command"][0], "migrate"]
    assert (migrate["image"], migrate["envFrom"], migrate["env"]) == (
        server["image"],
        server["envFrom"],
        server["env"],
    ), "the migration runs on the server's database"


def test_termination_grace_covers_the_drain() -> None:
    """SIGTERM after preStop; the server then takes up to twice --shutdown-grace (calls, then
    the flush of what agents sent) before it exits; only then may the kubelet SIGKILL it."""
    pod, container = _pod("Deployment", "cloudassist-server")
    grace = float(
        _manifest("ConfigMap", "cloudassist-server")["data"]["CLOUDASSIST_SHUTDOWN_GRACE"]
    )
    pre_stop = container["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pre_stop + 2 * grace
    agent_pod, _ = _pod("DaemonSet", "cloudassist-agent")
    assert agent_pod["terminationGracePeriodSeconds"] > agent_config.AgentConfig.kill_grace_seconds


def test_every_server_reads_the_admin_key_from_the_secret_mounted_read_only() -> None:
    """Not an admin.key in one pod's emptyDir: the same operator-made key in every pod."""
    pod, container = _pod("Deployment", "cloudassist-server")
    data = _manifest("ConfigMap", "cloudassist-server")["data"]
    key_file = Path(data["CLOUDASSIST_ADMIN_KEY_FILE"])
    (mount,) = [m for m in container["volumeMounts"] if Path(m["mountPath"]) == key_file.parent]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    # A Secret volume holds one file per key of the Secret: `key` here.
    assert (volume["secret"]["secretName"], key_file.name) == ("cloudassist-admin-key", "key")
    assert mount["readOnly"] is True


def test_the_manifests_set_only_real_flags() -> None:
    """A misspelt variable would be ignored without a word."""
    config = set(_manifest("ConfigMap", "cloudassist-server")["data"])
    _, server_container = _pod("Deployment", "cloudassist-server")
    _, agent_container = _pod("DaemonSet", "cloudassist-agent")
    server_env = config | {e["name"] for e in server_container["env"]}
    agent_env = {e["name"] for e in agent_container["env"]} - {"TMPDIR"}
    assert server_env <= SERVER_VARIABLES, server_env - SERVER_VARIABLES
    assert agent_env <= AGENT_VARIABLES, agent_env - AGENT_VARIABLES


def test_the_envoy_config_is_yaml() -> None:
    config = yaml.safe_load((ROOT / "deploy" / "envoy" / "envoy.yaml").read_text())
    assert config["static_resources"]["listeners"]
    assert config["static_resources"]["clusters"]


# systemd units -------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", [SERVER_UNIT, AGENT_UNIT], ids=lambda p: p.name)
def test_systemd_accepts_the_unit(unit: Path, tmp_path: Path) -> None:
    """systemd-analyze verify warns about any setting systemd would ignore."""
    here = tmp_path / unit.name
    here.write_text(unit.read_text().replace(PACKAGED_BIN + "/", f"{BIN}/"))
    verify = subprocess.run(
        [_require("systemd-analyze"), "verify", "--man=no", str(here)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert (verify.returncode, verify.stderr) == (0, "")


def test_the_server_unit_is_hardened(tmp_path: Path) -> None:
    here = tmp_path / SERVER_UNIT.name
    here.write_text(SERVER_UNIT.read_text().replace(PACKAGED_BIN + "/", f"{BIN}/"))
    # Exposure 2.0 of 10 at most: systemd's "OK" band.
    security = subprocess.run(
        [_require("systemd-analyze"), "security", "--offline=true", "--threshold=20", str(here)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert security.returncode == 0, security.stdout + security.stderr
    unit = read_unit(SERVER_UNIT)
    assert unit.value("Service", "User") == unit.value("Service", "Group") == "cloudassist"
    assert unit.value("Service", "NoNewPrivileges") == "yes"


def test_the_agent_unit_runs_as_root_unconfined() -> None:
    """Scripts run as the user an invocation names: the agent must be root, and what the unit
    imposes on the agent it imposes on every script."""
    unit = read_unit(AGENT_UNIT)
    assert unit.values("Service", "User") in ([], ["root"])
    for setting in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "CapabilityBoundingSet"):
        assert not unit.values("Service", setting), setting


def test_the_sysusers_file_makes_the_servers_user(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    subprocess.run(
        [_require("systemd-sysusers"), f"--root={tmp_path}", SYSTEMD / "cloudassist.sysusers.conf"],
        check=True,
        capture_output=True,
    )
    unit = read_unit(SERVER_UNIT)
    users = {line.split(":")[0]: line.split(":") for line in (tmp_path / "etc/passwd").open()}
    user = users[unit.value("Service", "User")]
    assert user[5] == f"/var/lib/{unit.value('Service', 'StateDirectory')}"
    groups = {line.split(":")[0] for line in (tmp_path / "etc/group").open()}
    assert unit.value("Service", "Group") in groups


def test_the_units_set_only_real_flags() -> None:
    for path, variables in [(SERVER_UNIT, SERVER_VARIABLES), (AGENT_UNIT, AGENT_VARIABLES)]:
        env = read_unit(path).assignments()
        assert set(env) <= variables, (path.name, set(env) - variables)
    example = read_env_file(SYSTEMD / "cloudassist-server.default")
    commented = re.findall(
        r"^#(CLOUDASSIST_\w+)=", (SYSTEMD / "cloudassist-server.default").read_text(), re.M
    )
    assert commented, "the example file shows settings"
    assert set(example) | set(commented) <= SERVER_VARIABLES


def test_stop_timeouts_cover_the_drain() -> None:
    server_unit = read_unit(SERVER_UNIT)
    grace = float(server_unit.assignments()["CLOUDASSIST_SHUTDOWN_GRACE"])
    assert server_unit.value("Service", "KillSignal") == "SIGTERM"
    assert _seconds(server_unit.value("Service", "TimeoutStopSec")) > 2 * grace
    agent_unit = read_unit(AGENT_UNIT)
    kill_grace = agent_config.AgentConfig.kill_grace_seconds
    assert _seconds(agent_unit.value("Service", "TimeoutStopSec")) > kill_grace


def test_the_deployed_agent_unit_is_the_one_install_service_writes() -> None:
    assert AGENT_UNIT.read_text() == render_unit(PACKAGED_AGENT, DEFAULT_ENV_FILE), (
        "deploy/systemd/cloudassist-agent.service is generated: "
        "python -m cloudassist.agent.install_service > deploy/systemd/cloudassist-agent.service"
    )


class SystemdStarted(Process):
    """Started with exactly `env`, as systemd starts a service: none of the test's own."""

    def start(self) -> None:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv, stdout=self._log, stderr=subprocess.STDOUT, env=self.env
        )


def _write_env_file(path: Path, settings: dict[str, str]) -> None:
    path.write_text("".join(f"{name}={value}\n" for name, value in settings.items()))


class UnitServer(ServerProcess, SystemdStarted):
    """The server unit's ExecStart and environment, its /etc/default file holding what a test
    changes: a temp data dir, port 0, the test database."""

    def __init__(self, workdir: Path) -> None:
        super().__init__(workdir)
        env_file = workdir / "cloudassist-server.env"
        _write_env_file(
            env_file,
            {
                "CLOUDASSIST_LISTEN": "127.0.0.1:0",
                "CLOUDASSIST_DATA_DIR": str(workdir),
                "CLOUDASSIST_READY_FILE": str(self.ready_file),
                **({"CLOUDASSIST_DB": self.db_url} if self.db_url else {}),
            },
        )
        paths = {PACKAGED_BIN: BIN, "/etc/default/cloudassist-server": env_file}
        unit = read_unit(SERVER_UNIT)
        self.argv = unit.exec_start(paths)
        self.env = unit.environment(paths)


class UnitAgent(AgentProcess, SystemdStarted):
    """An agent unit's ExecStart and environment; `settings`, when given, go to its
    environment file first (the deploy/ unit's /etc/default file, here in a temp dir)."""

    def __init__(
        self,
        server: ServerProcess,
        instance_id: str,
        workdir: Path,
        unit: Path,
        paths: dict[str, Path],
        settings: dict[str, str] | None = None,
    ) -> None:
        super().__init__(server, instance_id, workdir)
        self.unit = read_unit(unit)
        self.paths = paths
        self.settings = settings

    def start_process(self) -> None:
        if self.settings is not None:
            env_file = self.unit.value("Service", "EnvironmentFile").removeprefix("-")
            _write_env_file(self.paths[env_file], self.settings)
        self.argv = self.unit.exec_start(self.paths)
        self.env = self.unit.environment(self.paths)
        SystemdStarted.start(self)


@pytest.fixture
def unit_server(tmp_path: Path) -> Iterator[UnitServer]:
    process = UnitServer(tmp_path / "server")
    process.start()
    try:
        yield process
    finally:
        process.stop()


@pytest.fixture
async def stub(unit_server: UnitServer) -> AsyncIterator[command_pb2_grpc.CommandServiceStub]:
    async with client_channel(unit_server) as channel:
        yield command_pb2_grpc.CommandServiceStub(channel)


async def _round_trip(stub: command_pb2_grpc.CommandServiceStub, instance_id: str) -> None:
    """A RunCommand on the instance comes back with its output and exit code."""
    invoke_id = await run(stub, 'echo "ran as $(id -u)"; exit 3', [instance_id])
    seen = await watch(stub, invoke_id)
    assert bytes(seen.output[instance_id]) == f"ran as {os.getuid()}\n".encode()
    result = (await results(stub, invoke_id))[instance_id]
    assert (result.state, result.exit_code) == (pb.EXECUTION_STATE_FAILED, 3)


def _probe_services() -> set[str]:
    _, container = _pod("Deployment", "cloudassist-server")
    return {
        container[p]["grpc"].get("service", "")
        for p in ("startupProbe", "readinessProbe", "livenessProbe")
    }


async def test_the_units_run_a_server_and_an_agent_that_stop_gracefully(
    tmp_path: Path, unit_server: UnitServer, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    # What the Deployment's probes ask is what the server answers.
    with unit_server.sync_channel() as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in _probe_services() | {"cloudassist.v1.AgentService"}:
            response = health.Check(health_pb2.HealthCheckRequest(service=service))
            assert response.status == health_pb2.HealthCheckResponse.SERVING, service
    activation_id, activation_code = unit_server.activation()
    agent_process = UnitAgent(
        unit_server,
        "i-unit",
        tmp_path,
        AGENT_UNIT,
        {PACKAGED_BIN: BIN, str(DEFAULT_ENV_FILE): tmp_path / "cloudassist-agent.env"},
        {
            "CLOUDASSIST_AGENT_SERVER": unit_server.agent_address,
            "CLOUDASSIST_AGENT_INSTANCE_ID": "i-unit",
            "CLOUDASSIST_AGENT_ACTIVATION_ID": activation_id,
            "CLOUDASSIST_AGENT_ACTIVATION_CODE": activation_code,
            "CLOUDASSIST_AGENT_STATE_DIR": str(tmp_path / "agent-state"),
            "CLOUDASSIST_AGENT_MAX_BACKOFF": "2",
        },
    )
    agent_process.start()
    try:
        await _round_trip(stub, "i-unit")
        assert (tmp_path / "agent-state" / "credentials.json").exists()
        # Stored where the environment file says (the data dir, or the test's database).
        assert unit_server.query("SELECT count(*) FROM records") == [(1,)]
    finally:
        agent_exit = agent_process.stop(signal.SIGTERM)
    assert agent_exit == 0, agent_process.log()
    server_exit = unit_server.stop(signal.SIGTERM)
    assert server_exit == 0, unit_server.log()
    assert "stopped" in unit_server.log()


# install-service -------------------------------------------------------------------------


async def test_install_service_writes_a_unit_and_env_file_that_run_the_agent(
    tmp_path: Path, unit_server: UnitServer, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    activation_id, activation_code = unit_server.activation()
    unit_dir, env_file = tmp_path / "system", tmp_path / "default" / "cloudassist-agent"
    state_dir = tmp_path / "agent-state"
    installed = await asyncio.to_thread(
        subprocess.run,
        [
            BIN / "cloudassist-agent", "install-service", "--unit-dir", unit_dir,
            "--env-file", env_file, "--no-start",
            "--server", unit_server.agent_address, "--instance-id", "i-service",
            "--activation-id", activation_id, "--activation-code", activation_code,
            "--state-dir", state_dir, "--tag", "role=web", "--tag", "team=ops",
            "--max-backoff", "2",
        ],
        capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    unit_path = unit_dir / "cloudassist-agent.service"
    assert unit_path.read_text() == render_unit(BIN / "cloudassist-agent", env_file)
    assert unit_path.stat().st_mode & 0o777 == 0o644
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert read_env_file(env_file) == {
        "CLOUDASSIST_AGENT_SERVER": unit_server.agent_address,
        "CLOUDASSIST_AGENT_INSTANCE_ID": "i-service",
        "CLOUDASSIST_AGENT_ACTIVATION_ID": activation_id,
        "CLOUDASSIST_AGENT_ACTIVATION_CODE": activation_code,
        "CLOUDASSIST_AGENT_STATE_DIR": str(state_dir),
        "CLOUDASSIST_AGENT_TAGS": "role=web,team=ops",
        "CLOUDASSIST_AGENT_MAX_BACKOFF": "2.0",
    }
    # The unit as written: its own ExecStart and EnvironmentFile, nothing mapped.
    agent_process = UnitAgent(unit_server, "i-service", tmp_path, unit_path, {})
    agent_process.start()
    try:
        with unit_server.sync_channel() as channel:
            response = instance_pb2_grpc.InstanceServiceStub(channel).DescribeInstances(
                instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=["i-service"]),
                metadata=unit_server.metadata,
            )
        tags = {(t.key, t.value) for t in response.instances[0].tags}
        assert tags == {("role", "web"), ("team", "ops")}
        await _round_trip(stub, "i-service")
    finally:
        assert agent_process.stop(signal.SIGTERM) == 0, agent_process.log()


def test_install_service_writes_every_flag_so_that_the_agent_reads_it_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    flags = [
        "--server", "a.example:50051,b.example:50051", "--instance-id", "i-1",
        "--region", "cn-beijing", "--state-dir", "state dir", "--activation-id", "act-1",
        "--activation-code", "c0de_-x", "--ca", "/etc/ca.pem", "--cert", "/etc/c.pem",
        "--key", "/etc/k.pem", "--kill-grace", "7.5", "--max-backoff", "9",
        "--tag", "role=web", "--tag", "note=two words", "--powershell", "/opt/it's \\ \"$pwsh\"`",
        "--boot-id-file", "/run/boot", "--log-level", "DEBUG", "--log-format", "json",
    ]  # fmt: skip
    monkeypatch.chdir(tmp_path)
    expected = agent_config.parse_config(flags)
    env_file = tmp_path / "env"
    env_file.write_text(render_env_file(agent_environment(flags)))
    written = read_env_file(env_file)
    assert set(written) == AGENT_VARIABLES, "every flag was given, so every variable is written"
    for name in AGENT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    for name, value in written.items():
        monkeypatch.setenv(name, value)
    monkeypatch.chdir("/")  # where systemd starts the service: relative paths were resolved
    assert agent_config.parse_config([]) == dataclasses.replace(
        expected, state_dir=tmp_path / "state dir"
    )


def test_install_service_refuses_an_unknown_flag_and_writes_nothing(tmp_path: Path) -> None:
    refused = subprocess.run(
        [BIN / "cloudassist-agent", "install-service", "--unit-dir", tmp_path, "--env-file",
         tmp_path / "env", "--no-start", "--sever", "a.example:50051"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--sever" in refused.stderr
    assert list(tmp_path.iterdir()) == []


# Packaging -------------------------------------------------------------------------------


@pytest.mark.parametrize("program", ["cloudassist-server", "cloudassist-agent"])
def test_version_is_the_packages(program: str) -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert importlib.metadata.version("cloudassist") == declared
    shown = subprocess.run([BIN / program, "--version"], capture_output=True, text=True, check=True)
    assert shown.stdout == f"{program} {declared}\n"
