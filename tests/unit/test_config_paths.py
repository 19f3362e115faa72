"""Every path a process takes from its flags, environment or config file is absolute once its
configuration is built: relative ones against the directory it was started in."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudassist.agent import config as agent_config
from cloudassist.agent.install_service import agent_environment
from cloudassist.client import auth
from cloudassist.client.flags import with_absolute_paths
from cloudassist.client.parser import build_parser
from cloudassist.server import config as server_config
from cloudassist.server.store.engine import absolute_database_url


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("XDG_CONFIG_HOME", "CLOUDASSIST_CONFIG", "CLOUDASSIST_CA"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_the_agent_makes_its_relative_paths_absolute_against_its_start_directory(
    here: Path,
) -> None:
    config = agent_config.parse_config(
        ["--state-dir", "var/agent", "--ca", "tls/ca.pem", "--cert", "tls/me.pem",
         "--key", "../me.key", "--boot-id-file", "boot_id", "--powershell", "bin/pwsh"]
    )  # fmt: skip
    assert config.state_dir == here / "var" / "agent"
    assert (config.ca, config.cert) == (here / "tls" / "ca.pem", here / "tls" / "me.pem")
    assert config.key == here / ".." / "me.key"
    assert config.boot_id_file == here / "boot_id"
    assert config.powershell == str(here / "bin" / "pwsh")


def test_the_agent_makes_paths_from_its_environment_absolute(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDASSIST_AGENT_STATE_DIR", "state")
    monkeypatch.setenv("CLOUDASSIST_AGENT_CA", "ca.pem")
    config = agent_config.parse_config([])
    assert (config.state_dir, config.ca) == (here / "state", here / "ca.pem")


def test_the_agent_keeps_absolute_paths_and_a_pwsh_found_on_path(here: Path) -> None:
    config = agent_config.parse_config(
        ["--state-dir", "/var/lib/x", "--powershell", "pwsh", "--boot-id-file", "/proc/b"]
    )
    assert (config.state_dir, config.boot_id_file) == (Path("/var/lib/x"), Path("/proc/b"))
    assert config.powershell == "pwsh"
    assert (config.ca, config.cert, config.key) == (None, None, None)


def test_install_service_writes_the_agents_relative_paths_absolute(here: Path) -> None:
    environment = agent_environment(["--state-dir", "state", "--powershell", "./pwsh"])
    assert environment["CLOUDASSIST_AGENT_STATE_DIR"] == str(here / "state")
    assert environment["CLOUDASSIST_AGENT_POWERSHELL"] == str(here / "pwsh")


def test_the_server_makes_its_relative_paths_absolute_against_its_start_directory(
    here: Path,
) -> None:
    config = server_config.parse_config(
        ["--data-dir", "var", "--output-dir", "out", "--ready-file", "var/ready.json",
         "--tls-cert", "tls/s.crt", "--tls-key", "tls/s.key", "--agent-ca", "tls/ca.pem",
         "--admin-key-file", "secrets/admin.key", "--db", "sqlite:///db/x.db?timeout=5"]
    )  # fmt: skip
    assert config.data_dir == here / "var"
    assert config.output_dir == here / "out"
    assert config.ready_file == here / "var" / "ready.json"
    assert (config.tls_cert, config.tls_key) == (here / "tls" / "s.crt", here / "tls" / "s.key")
    assert config.agent_ca == here / "tls" / "ca.pem"
    assert config.admin_key_file == here / "secrets" / "admin.key"
    assert config.database_url == f"sqlite:///{here}/db/x.db?timeout=5"


def test_the_servers_default_database_is_under_its_absolute_data_dir(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CLOUDASSIST_DATA_DIR", "state")
    config = server_config.parse_config([])
    assert config.data_dir == here / "state"
    assert config.database_url == f"sqlite:///{here}/state/cloudassist.db"
    assert (config.output_dir, config.ready_file, config.admin_key_file) == (None, None, None)


def test_migrate_makes_its_database_paths_absolute(here: Path) -> None:
    config, _ = server_config.parse_migrate_config(["--data-dir", "var"])
    assert config.database_url == f"sqlite:///{here}/var/cloudassist.db"
    config, _ = server_config.parse_migrate_config(["--db", "sqlite:///x.db"])
    assert config.database_url == f"sqlite:///{here}/x.db"


@pytest.mark.parametrize(
    "url",
    [
        "",
        "sqlite://",
        "sqlite:///:memory:",
        "sqlite:////var/lib/cloudassist/cloudassist.db",
        "sqlite:///file:x.db?mode=ro&uri=true",
        "postgresql+psycopg://cloudassist:secret@db.example/cloudassist",
        "not a url",
    ],
)
def test_database_urls_without_a_relative_file_stay_as_they_are(here: Path, url: str) -> None:
    assert absolute_database_url(url) == url


def test_a_relative_sqlite_file_of_any_driver_becomes_absolute(here: Path) -> None:
    assert absolute_database_url("sqlite+pysqlite:///a/b.db") == f"sqlite+pysqlite:///{here}/a/b.db"


def test_the_cli_makes_the_files_it_reads_absolute(here: Path) -> None:
    args = with_absolute_paths(
        build_parser().parse_args(["--ca", "ca.pem", "run", "-i", "i-a", "--file", "s.sh"])
    )
    assert (args.ca, args.file) == (here / "ca.pem", str(here / "s.sh"))
    args = with_absolute_paths(build_parser().parse_args(["run", "-i", "i-a", "--file", "-"]))
    assert (args.ca, args.file) == (None, "-")


def test_a_relative_ca_in_the_cli_config_file_is_relative_to_that_file(
    here: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = here / "etc" / "cloudassist.toml"
    config_file.parent.mkdir()
    config_file.write_text('server = "s.example:50051"\nca = "tls/ca.pem"\n')
    monkeypatch.setenv("CLOUDASSIST_CONFIG", str(config_file))
    (here / "elsewhere").mkdir()
    monkeypatch.chdir(here / "elsewhere")
    assert auth.load_config()["ca"] == str(here / "etc" / "tls" / "ca.pem")
    assert build_parser().parse_args(["instances"]).ca == here / "etc" / "tls" / "ca.pem"
