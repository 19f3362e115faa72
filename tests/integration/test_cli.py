"""The `cloudassist` command against the real server and agents."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from datetime import date
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cloudassist.client.completion import leaf_parsers
from cloudassist.client.parser import build_parser
from cloudassist.v1 import command_pb2_grpc
from tests.integration.conftest import Cluster
from tests.integration.helpers import run as run_script
from tests.integration.helpers import watch as watch_to_end
from tests.support import AgentProcess, client_channel, free_port

CLI = str(Path(sys.executable).parent / "cloudassist")
COMMAND_WORDS = {word for path in leaf_parsers(build_parser()) for word in path}


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


async def test_a_file_that_cannot_be_read_is_a_local_error(
    cluster: Cluster, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.sh"
    code, out, err = await cli(cluster, "run", "-i", "i-a", "--file", str(missing))
    assert (code, out, err) == (1, b"", f"cloudassist: {missing}: No such file or directory\n")


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
    assert err.splitlines()[:2] == [
        "error: NOT_FOUND InvalidCmdId.NotFound",
        "  command_id: no command 'c-nope' in region cn-hangzhou",
    ]

    code, out, err = await cli(cluster, "run", "-i", "i-a", "--timeout", "999999", "true")
    assert (code, out) == (2, b"")
    head, violation = err.splitlines()[:2]
    assert head == "error: INVALID_ARGUMENT InvalidTimeout.ExceedLimit"
    assert violation.startswith("  timeout_seconds: ")
    # Piped stderr: no colours.
    assert "\x1b[" not in err


async def test_an_unreachable_server_says_where_it_looked(cluster: Cluster) -> None:
    proc = await asyncio.create_subprocess_exec(
        CLI, "--server", f"127.0.0.1:{free_port()}", "instances",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await proc.communicate()
    assert (proc.returncode, out) == (2, b"")
    lines = err.decode().splitlines()
    assert lines[0] == "error: UNAVAILABLE"
    assert "is a server listening on 127.0.0.1:" in lines[-1]


async def test_colours_only_on_a_terminal_or_when_asked(cluster: Cluster) -> None:
    args = ("run", "-i", "i-a", "-i", "i-b", "echo x")
    code, out, _ = await cli(cluster, *args)
    assert (code, sorted(out.splitlines())) == (0, [b"i-a | x", b"i-b | x"])
    code, out, _ = await cli(cluster, "--color", "always", *args)
    assert code == 0
    assert sorted(out.splitlines()) == [b"\x1b[36mi-a\x1b[0m | x", b"\x1b[36mi-b\x1b[0m | x"]
    code, out, _ = await cli(cluster, "--color", "always", "instances", "-i", "i-a")
    assert "\x1b[32myes\x1b[0m" in out.decode()
    code, out, _ = await cli(cluster, "instances", "-i", "i-a")
    assert b"\x1b" not in out


async def test_version() -> None:
    proc = await asyncio.create_subprocess_exec(CLI, "--version", stdout=asyncio.subprocess.PIPE)
    out, _ = await proc.communicate()
    assert (proc.returncode, out.decode()) == (0, f"cloudassist {version('cloudassist')}\n")


async def test_every_command_prints_json_that_parses(cluster: Cluster, tmp_path: Path) -> None:
    """Each command with --json after it; the set of commands is the parser's."""
    covered: set[tuple[str, ...]] = set()

    async def json_of(*args: str) -> Any:
        code, out, err = await cli(cluster, *args, "--json")
        assert code == 0, (args, err)
        covered.add(tuple(a for a in args if a in COMMAND_WORDS)[:2])
        return json.loads(out)

    async def json_lines_of(*args: str) -> list[Any]:
        code, out, err = await cli(cluster, *args, "--json")
        assert code == 0, (args, err)
        covered.add((args[0],))
        return [json.loads(line) for line in out.splitlines()]

    command_id = (
        await json_of("commands", "create", "--name", "cli-json", "--enable-parameter",
                      "--content", "echo {{who}}")
    )["command_id"]  # fmt: skip
    assert (await json_of("commands", "list", "--id", command_id))["commands"][0]["name"] == (
        "cli-json"
    )
    assert await json_of("commands", "modify", command_id, "--description", "d") == {}

    ran = await json_lines_of("run", "-i", "i-a", "-i", "i-b", "echo hi")
    assert list(ran[0]) == ["invocation"]
    assert {next(iter(line)) for line in ran[1:-1]} == {"output", "state_change"}
    summary = ran[-1]["summary"]
    assert summary["exit_code"] == 0
    assert [i["instance_id"] for i in summary["instances"]] == ["i-a", "i-b"]
    invoke_id = ran[0]["invocation"]["invoke_id"]
    watched = await json_lines_of("watch", invoke_id)
    assert watched[-1]["summary"]["invoke_id"] == invoke_id
    assert b"hi\n" in {base64.b64decode(w["output"]["data"]) for w in watched if "output" in w}

    async with client_channel(cluster.server) as channel:
        stub = command_pb2_grpc.CommandServiceStub(channel)
        half_failed = await run_script(
            stub, 'test "{{ACS::InstanceId}}" = i-a', ["i-a", "i-b"], enable_parameter=True
        )
        await watch_to_end(stub, half_failed)
    rerun = await json_of("rerun", half_failed, "--failed")
    assert rerun["instance_ids"] == ["i-b"]
    assert "cn-hangzhou" in {r["region_id"] for r in (await json_of("regions"))["regions"]}

    output = await json_of("output", invoke_id, "-i", "i-a")
    assert base64.b64decode(output["data"]) == b"hi\n"
    assert (await json_of("results", invoke_id))["total_count"] == "2"
    assert (await json_of("invocations", "--id", invoke_id))["invocations"][0]["invoke_id"] == (
        invoke_id
    )

    periodic = (
        await json_of("invoke", command_id, "-i", "i-c", "-p", "who=j", "--frequency", "rate(1h)")
    )["invoke_id"]
    assert await json_of("modify-invocation", periodic, "--frequency", "rate(2h)") == {}
    assert await json_of("stop", periodic) == {}
    fires = (await json_of("schedule", "rate(1h)", "-n", "3"))["fire_times"]
    assert [f["local_time"][-6:] for f in fires] == ["+08:00"] * 3

    sent = await json_of("send-file", "-i", "i-a", "--name", "f.txt", "--target-dir",
                         str(tmp_path), "--content", "hello")  # fmt: skip
    assert "total_count" in await json_of("file-results", sent["invoke_id"])

    assert await json_of("tag", "-i", "i-a", "-t", "cli-json=1") == {}
    tagged = await json_of("instances", "-t", "cli-json=")
    assert [i["instance_id"] for i in tagged["instances"]] == ["i-a"]
    assert await json_of("untag", "-i", "i-a", "-k", "cli-json") == {}
    leaving = AgentProcess(cluster.server, "i-cli-json", tmp_path)
    leaving.start()
    try:
        assert await json_of("deregister", "i-cli-json") == {}
    finally:
        leaving.stop()

    account = (await json_of("accounts", "create", "cli-json"))["account"]["account_id"]
    assert "accounts" in await json_of("accounts", "list")
    key = await json_of("keys", "create", "--account", account)
    assert key["token"].startswith(key["key"]["key_id"])
    assert "keys" in await json_of("keys", "list", "--account", account)
    assert await json_of("keys", "revoke", key["key"]["key_id"]) == {}
    assert "activation_code" in await json_of("activations", "create")
    assert "activations" in await json_of("activations", "list")
    assert "events" in await json_of("audit", "--page-size", "5")
    assert await json_of("commands", "delete", command_id) == {}

    # `completion` prints a shell script, not results.
    leaves = set(leaf_parsers(build_parser())) - {("completion",)}
    assert covered == leaves


async def test_schedule_prints_the_next_fire_times(cluster: Cluster) -> None:
    year = date.today().year + 1
    weekdays = [d for d in (date(year, 1, n) for n in range(1, 8)) if d.weekday() < 5][:2]
    frequency = f"0 0 12 ? * MON-FRI {year} Asia/Shanghai"
    code, out, _ = await cli(cluster, "schedule", frequency, "-n", "2")
    assert code == 0
    assert out.decode().splitlines() == [f"{d} 12:00:00 +08:00" for d in weekdays]
    code, _, err = await cli(cluster, "schedule", "*/5 * * * * ?")
    assert code == 2
    assert "InvalidParam.Frequency" in err
    assert "frequency" in err


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
