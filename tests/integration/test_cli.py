"""The `cloudassist` command against the real server and agents."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

from tests.integration.conftest import Cluster

CLI = str(Path(sys.executable).parent / "cloudassist")


async def cli(cluster: Cluster, *args: str, stdin: bytes | None = None) -> tuple[int, bytes, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--server",
        cluster.server.address,
        *args,
        stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CLOUDASSIST_API_KEY": cluster.server.admin_key},
    )
    out, err = await proc.communicate(stdin)
    return proc.returncode or 0, out, err.decode()


async def test_run_prints_output_and_exits_with_the_remote_code(cluster: Cluster) -> None:
    code, out, err = await cli(cluster, "run", "-i", "i-a", "echo hi; echo oops >&2; exit 3")
    assert out == b"hi\noops\n"
    assert code == 3
    assert "invocation t-" in err


async def test_run_on_several_instances_prefixes_each_line(cluster: Cluster) -> None:
    code, out, _ = await cli(cluster, "run", "-i", "i-a", "-i", "i-b", "printf 'x\\ny'")
    assert code == 0
    lines = sorted(out.decode().splitlines())
    assert lines == ["i-a | x", "i-a | y", "i-b | x", "i-b | y"]


async def test_run_exits_124_on_timeout(cluster: Cluster) -> None:
    code, out, err = await cli(cluster, "run", "-i", "i-c", "--timeout", "1", "echo t; sleep 30")
    assert code == 124
    assert out == b"t\n"
    assert "TIMEOUT (ExecutionTimeout)" in err


async def test_run_reads_the_script_from_stdin(cluster: Cluster) -> None:
    code, out, _ = await cli(cluster, "run", "-i", "i-a", "--file", "-", stdin=b"echo piped\n")
    assert (code, out) == (0, b"piped\n")


async def test_run_passes_environment_variables(cluster: Cluster) -> None:
    code, out, _ = await cli(
        cluster, "run", "-i", "i-b", "-e", "WHO=cli", "--env", "N=2", 'echo "$WHO $N"'
    )
    assert (code, out) == (0, b"cli 2\n")
    code, _, err = await cli(cluster, "run", "-i", "i-b", "-e", "NOVALUE", "true")
    assert code != 0
    assert "--env takes KEY=VALUE" in err


async def test_run_dry_run_prints_the_script_and_runs_nothing(cluster: Cluster) -> None:
    before = cluster.server.resource_counts()
    code, out, err = await cli(
        cluster, "run", "--dry-run", "-i", "i-a", "-i", "i-b", "--timeout", "30", "echo hi"
    )
    assert code == 0
    assert out.decode().splitlines() == [
        "# i-a (online), timeout 30 s",
        "echo hi",
        "# i-b (online), timeout 30 s",
        "echo hi",
    ]
    assert "nothing was created" in err
    assert cluster.server.resource_counts() == before


async def test_invoke_on_a_schedule_or_at_the_next_boot(cluster: Cluster) -> None:
    code, out, _ = await cli(
        cluster, "commands", "create", "--name", "cli-scheduled", "--content", "echo tick"
    )
    assert code == 0
    command_id = out.decode().strip()
    for flags, mode in (
        (["--frequency", "rate(1h)"], "REPEAT_MODE_PERIOD"),
        (["--repeat-mode", "next-reboot"], "REPEAT_MODE_NEXT_REBOOT_ONLY"),
    ):
        code, out, err = await cli(cluster, "invoke", command_id, "-i", "i-c", *flags)
        assert code == 0, err
        invoke_id = out.decode().strip()
        code, listed, _ = await cli(cluster, "--json", "invocations", "--id", invoke_id)
        (invocation,) = json.loads(listed)["invocations"]
        assert invocation["repeat_mode"] == mode
        assert (await cli(cluster, "stop", invoke_id))[0] == 0


async def test_command_lifecycle_with_json(cluster: Cluster) -> None:
    code, out, err = await cli(
        cluster, "--json", "commands", "create", "--name", "cli-cmd",
        "--content", "echo {{who}}", "--enable-parameter", "--timeout", "30",
    )  # fmt: skip
    assert code == 0, err
    command_id = json.loads(out)["command_id"]

    code, out, _ = await cli(cluster, "--json", "commands", "list", "--id", command_id)
    listed = json.loads(out)["commands"]
    assert [(c["name"], c["parameter_names"], c["timeout_seconds"]) for c in listed] == [
        ("cli-cmd", ["who"], "30")
    ]

    code, _, err = await cli(cluster, "commands", "modify", command_id, "--name", "renamed")
    assert code == 0, err
    code, out, _ = await cli(cluster, "commands", "list", "--name", "renamed")
    assert command_id in out.decode()

    code, out, err = await cli(
        cluster, "invoke", command_id, "-i", "i-b", "-p", "who=cli", "--watch"
    )
    assert code == 0, err
    invoke_id, printed = out.decode().split("\n", 1)
    assert printed == "cli\n"

    code, out, _ = await cli(cluster, "output", invoke_id)
    assert out == b"cli\n"
    code, out, _ = await cli(cluster, "results", invoke_id)
    assert "SUCCESS" in out.decode()
    assert "i-b" in out.decode()
    code, out, _ = await cli(cluster, "--json", "invocations", "--id", invoke_id)
    assert json.loads(out)["invocations"][0]["invoke_status"] == "INVOKE_STATUS_FINISHED"

    code, _, _ = await cli(cluster, "commands", "delete", command_id)
    assert code == 0
    code, out, _ = await cli(cluster, "--json", "commands", "list", "--id", command_id)
    assert json.loads(out).get("commands", []) == []


async def test_server_errors_are_printed_readably(cluster: Cluster) -> None:
    code, out, err = await cli(cluster, "invoke", "c-nope", "-i", "i-a")
    assert code == 2
    assert out == b""
    assert "NOT_FOUND (InvalidCmdId.NotFound): command_id: no command 'c-nope'" in err


async def test_instances_lists_the_agents(cluster: Cluster) -> None:
    code, out, _ = await cli(cluster, "instances")
    text = out.decode()
    assert code == 0
    for instance_id in ("i-a", "i-b", "i-c"):
        assert instance_id in text
    assert "yes" in text


async def test_stop_from_the_cli(cluster: Cluster) -> None:
    run = await asyncio.create_subprocess_exec(
        CLI, "--server", cluster.server.address, "run", "-i", "i-c", "echo up; sleep 60",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "CLOUDASSIST_API_KEY": cluster.server.admin_key},
    )  # fmt: skip
    assert run.stderr is not None
    assert run.stdout is not None
    invoke_id = (await run.stderr.readline()).decode().split()[-1]
    assert await run.stdout.readline() == b"up\n"
    code, _, err = await cli(cluster, "stop", invoke_id)
    assert code == 0, err
    assert await run.wait() == 130
