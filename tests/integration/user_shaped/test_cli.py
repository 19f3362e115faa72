"""The `cloudassist` command as users run it: with their own account's key, in another
region, with text that is not ASCII, in a shell whose locale is C."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from pathlib import Path

import pytest

from tests.integration.user_shaped.conftest import AWAY, AWAY_AGENT, HOME, TENANT_AGENT, Fleet

CLI = str(Path(sys.executable).parent / "cloudassist")
WHO = "Grüße, 世界"
# A shell as found on a freshly installed server: no locale at all, or the C locale.
NO_LOCALE = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "LANG"))}
C_LOCALE = {**NO_LOCALE, "LC_ALL": "C"}


async def cli(
    fleet: Fleet, *args: str | bytes, key: str | None = None, env: dict[str, str] = C_LOCALE
) -> tuple[int, bytes, str]:
    """Runs the CLI with the admin's key (or `key`) given by --api-key."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        "--server",
        fleet.server.address,
        "--api-key",
        key or fleet.server.admin_key,
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await proc.communicate()
    return proc.returncode or 0, out, err.decode(errors="replace")


@pytest.mark.parametrize("env", [C_LOCALE, NO_LOCALE], ids=["c-locale", "no-locale"])
async def test_the_cli_takes_and_prints_text_that_is_not_ascii(
    fleet: Fleet, env: dict[str, str]
) -> None:
    name = f"grüßen-世界-{len(env)}"
    code, out, err = await cli(
        fleet, "commands", "create", "--name", name, "--description", "Größe 检查",
        "--enable-parameter", "--content", 'printf "%s — ✓" "{{who}}"', env=env,
    )  # fmt: skip
    assert code == 0, err
    command_id = out.decode().strip()
    code, out, err = await cli(fleet, "commands", "list", "--name", name, env=env)
    assert code == 0, err
    assert name in out.decode()
    code, out, err = await cli(fleet, "--json", "commands", "list", "--name", name, env=env)
    listed = json.loads(out)["commands"]
    assert [(c["command_id"], c["name"], c["description"]) for c in listed] == [
        (command_id, name, "Größe 检查")
    ]
    # Several unsorted instances: each line prefixed; the last line had no newline.
    code, out, err = await cli(
        fleet, "invoke", command_id, "-i", "u-c", "-i", "u-a", "-p", f"who={WHO}", "--watch",
        env=env,
    )  # fmt: skip
    assert code == 0, err
    invoke_id, printed = out.decode().split("\n", 1)
    assert invoke_id.startswith("t-")
    assert sorted(printed.splitlines()) == [f"u-a | {WHO} — ✓", f"u-c | {WHO} — ✓"]
    # One instance: its output as it is, byte for byte.
    code, out, err = await cli(fleet, "run", "-i", "u-b", 'printf "ünïcode ✓ 🚀"', env=env)
    assert (code, out) == (0, "ünïcode ✓ 🚀".encode()), err
    invoke_id = err.split("invocation ")[1].split()[0]
    code, out, err = await cli(fleet, "output", invoke_id, "-i", "u-b", env=env)
    assert (code, out) == (0, "ünïcode ✓ 🚀".encode()), err


async def test_the_cli_tags_and_lists_by_a_tag_that_is_not_ascii(fleet: Fleet) -> None:
    code, _, err = await cli(fleet, "tag", "-i", "u-c", "-i", "u-b", "-t", "团队=运维 ü")
    assert code == 0, err
    try:
        code, out, err = await cli(fleet, "instances", "-t", "团队=运维 ü")
        assert code == 0, err
        rows = [line for line in out.decode().splitlines() if line.startswith("u-")]
        assert sorted(r.split()[0] for r in rows) == ["u-b", "u-c"]
        assert all("团队=运维 ü" in r for r in rows), rows
        code, out, err = await cli(fleet, "run", "-t", "团队=运维 ü", 'echo "$0"')
        assert code == 0, err
        assert sorted(line.split(" | ")[0] for line in out.decode().splitlines()) == [
            "u-b",
            "u-c",
        ]
    finally:
        code, _, err = await cli(fleet, "untag", "-i", "u-b", "-i", "u-c", "-k", "团队")
        assert code == 0, err


async def test_a_script_typed_in_another_encoding_is_sent_byte_for_byte(fleet: Fleet) -> None:
    """A terminal in Latin-1 passes the bytes it has: a script is sent as those bytes; text
    the server takes (names, parameters, tags) is a local error naming the flag."""
    script = b"printf '\xe9t\xe9 '; echo caf\xe9"
    code, out, err = await cli(fleet, "run", "-i", "u-a", script)
    assert (code, out) == (0, b"\xe9t\xe9 caf\xe9\n"), err
    code, out, err = await cli(fleet, "commands", "create", "--name", "latin", "--content", script)
    assert code == 0, err
    listed = json.loads((await cli(fleet, "--json", "commands", "list", "--id", out.strip()))[1])
    assert base64.b64decode(listed["commands"][0]["command_content"]) == script
    before = fleet.server.resource_counts()
    for flags, named in [
        (["run", "-i", "u-a", "-p", b"who=caf\xe9", "echo {{who}}"], "parameter"),
        (["commands", "create", "--name", b"caf\xe9", "--content", "true"], "name"),
        (["instances", "-t", b"k=\xe9"], "tag"),
    ]:
        code, out, err = await cli(fleet, *flags)
        assert (code, out) == (1, b""), err
        assert err.startswith(f"cloudassist: {named}: b'"), err
        assert "is not UTF-8 text" in err
    assert fleet.server.resource_counts() == before


async def test_a_non_admin_key_and_another_region_from_the_cli(fleet: Fleet) -> None:
    code, out, err = await cli(fleet, "--json", "instances", key=fleet.tenant_key)
    assert code == 0, err
    assert [i["instance_id"] for i in json.loads(out)["instances"]] == [TENANT_AGENT]
    code, out, err = await cli(fleet, "run", "-i", TENANT_AGENT, "echo mine", key=fleet.tenant_key)
    assert (code, out) == (0, b"mine\n"), err
    code, out, err = await cli(fleet, "run", "-i", "u-a", "echo theirs", key=fleet.tenant_key)
    assert (code, out) == (2, b"")
    assert "NOT_FOUND InvalidInstance.NotFound" in err
    code, out, err = await cli(fleet, "--region", AWAY, "--json", "instances")
    assert [i["instance_id"] for i in json.loads(out)["instances"]] == [AWAY_AGENT]
    code, out, err = await cli(
        fleet, "--region", AWAY, "run", "-i", AWAY_AGENT, "--parameter", "x=1",
        "echo {{ACS::RegionId}} {{x}}",
    )  # fmt: skip
    assert (code, out) == (0, f"{AWAY} 1\n".encode()), err
    code, out, err = await cli(fleet, "--region", HOME, "run", "-i", AWAY_AGENT, "true")
    assert code == 2
    assert AWAY_AGENT in err
