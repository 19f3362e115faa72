"""The README, run the way a newcomer runs it: a fresh copy of the repository, the README's first
command there (`make run`), then "Quick start with the CLI" and "Quick start with grpcurl" in
another shell, each command exactly as README.md writes it (read from README.md itself, so there
is no second copy to drift), and what the README says they print.

The copy holds the files `git clone` gives (the tracked files, and new files not yet added that
.gitignore does not exclude), as they are on disk: in CI, a clean clone, that is the committed
repository; in a working tree, it is what the next commit would hold, so a README edit is tested
together with the code it describes. The programs are the ones the tests run (`.venv` in the copy
links to this virtualenv, where the project is installed editable).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from cloudassist.v1 import instance_pb2, instance_pb2_grpc
from tests import readme
from tests.integration.helpers import REGION
from tests.support import children_of, free_port, process_gone, wait_until

REPOSITORY = Path(__file__).resolve().parents[2]
VENV = Path(sys.executable).parent.parent
START_TIMEOUT = 30.0
# Each quick start, the whole section.
SECTION_TIMEOUT = 60.0
# What the README's JSON comments promise: `"key": "value"` or `"key": 0`.
JSON_PAIR = re.compile(r'"(\w+)": ("[^"]*"|-?\d+)')


@dataclass(frozen=True)
class Local:
    """The copy of the repository with `make run`'s script going in it."""

    root: Path
    listen: str
    log: Path
    workdir: Path

    def shell_env(self) -> dict[str, str]:
        """A newcomer's environment in another terminal: the CLI pointed at this server (the
        README's commands stay as written), no API key and no CLI config of this machine's,
        and the virtualenv's programs (grpcurl) on PATH."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDASSIST_")}
        env["CLOUDASSIST_SERVER"] = self.listen
        env["CLOUDASSIST_CONFIG"] = str(self.workdir / "no-config.toml")
        env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        return env

    def logs(self) -> str:
        return f"--- make run (end) ---\n{self.log.read_text(errors='replace')[-6000:]}"


def _copy_repository(target: Path) -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPOSITORY,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = REPOSITORY / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)


def _make_run_recipe(root: Path) -> str:
    """The one command of the Makefile's `run` target after its prerequisites."""
    makefile = (root / "Makefile").read_text()
    match = re.search(r"^run:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert match, "the Makefile has a `run` target"
    (recipe,) = match.group(1).strip().splitlines()
    return recipe.strip()


def _online(listen: str, admin_key: str, instance_id: str) -> bool:
    with grpc.insecure_channel(listen) as channel:
        response = instance_pb2_grpc.InstanceServiceStub(channel).DescribeInstances(
            instance_pb2.DescribeInstancesRequest(region_id=REGION, instance_ids=[instance_id]),
            metadata=(("authorization", f"Bearer {admin_key}"),),
        )
    return bool(response.instances) and response.instances[0].online


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Local]:
    workdir = tmp_path_factory.mktemp("readme")
    root = workdir / "cloudassist"
    _copy_repository(root)
    readme_text = (root / "README.md").read_text()
    first = readme.steps(readme.FENCE.findall(readme_text)[0])[0]
    assert first.command.split("#")[0].split() == ["make", "run"], first
    # Not `make run` itself: its prerequisite pip-installs the project into .venv, and this
    # virtualenv already holds it; the script it then runs is what the README's command starts.
    recipe = _make_run_recipe(root)
    assert re.fullmatch(r"\./[\w/.-]+\.sh", recipe), f"make run runs one script: {recipe!r}"
    (root / ".venv").symlink_to(VENV)
    listen = f"127.0.0.1:{free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDASSIST_")}
    env["CLOUDASSIST_LISTEN"] = listen
    env["CLOUDASSIST_CONSOLE_LISTEN"] = f"127.0.0.1:{free_port()}"
    log = workdir / "make-run.log"
    with log.open("wb") as out:
        script = subprocess.Popen(
            [str(root / recipe)],
            cwd=root,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started = Local(root, listen, log, workdir)
    children: list[int] = []
    try:
        admin_key = root / "var" / "admin.key"

        def agent_online() -> bool:
            if script.poll() is not None:
                raise RuntimeError(f"make run's script exited early\n{started.logs()}")
            # The server writes its admin key before it listens, its ready file after.
            ready = root / "var" / "ready.json"
            return (
                ready.exists()
                and admin_key.exists()
                and _online(listen, admin_key.read_text().strip(), "i-local")
            )

        try:
            wait_until(agent_online, START_TIMEOUT, "i-local online")
        except TimeoutError as timeout:
            raise TimeoutError(f"{timeout}\n{started.logs()}") from None
        children = children_of(script.pid)
        assert len(children) == 2, f"a server and an agent: {children}\n{started.logs()}"
        yield started
    finally:
        # Ctrl-C, as the README says: the script stops the server and the agent, and waits.
        # A process started with SIGINT ignored (a background job of a non-interactive shell)
        # passes that on, and a shell cannot trap it then: SIGTERM, which the script also stops on.
        ignored = signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        script.send_signal(signal.SIGTERM if ignored else signal.SIGINT)
        try:
            script.wait(30)
        except subprocess.TimeoutExpired:
            script.kill()
            script.wait()
        leftover = [pid for pid in children if not process_gone(pid)]
        for pid in leftover:
            os.kill(pid, signal.SIGKILL)
        assert not leftover, f"make run left {leftover} running\n{started.logs()}"
        assert script.returncode != -signal.SIGKILL, f"no stop on Ctrl-C\n{started.logs()}"


def _run_section(local: Local, heading: str) -> list[readme.Outcome]:
    """Every command of the README section, as written, each one's outcome; fails on the first
    command that did not run or exited otherwise than the README says."""
    steps = readme.steps(readme.section_code((local.root / "README.md").read_text(), heading))
    workdir = local.workdir / re.sub(r"\W+", "-", heading)
    outcomes = readme.run(steps, local.root, local.shell_env(), workdir, SECTION_TIMEOUT)
    for at, step in enumerate(steps):
        assert at < len(outcomes), f"{step.command!r} never ran (timeout?)\n{local.logs()}"
        outcome = outcomes[at]
        # `echo $?  # 3: …` says which status the command before it exits with; others, 0.
        following = steps[at + 1] if at + 1 < len(steps) else None
        code = None
        if following is not None and following.command.startswith("echo $?"):
            code = re.match(r"(\d+):", following.comment)
        expected = int(code.group(1)) if code else 0
        assert outcome.status == expected, f"{outcome}\n{local.logs()}"
    return outcomes


def _find(outcomes: list[readme.Outcome], pattern: str) -> readme.Outcome:
    """The one outcome whose command matches `pattern`: the README still has that command."""
    found = [o for o in outcomes if re.search(pattern, o.step.command)]
    assert len(found) == 1, f"one README command matches {pattern!r}: {[o.step for o in found]}"
    return found[0]


def test_the_cli_quick_start_prints_what_the_readme_says(local: Local) -> None:
    outcomes = _run_section(local, "Quick start with the CLI")

    instances = _find(outcomes, r"cloudassist instances\b")
    assert instances.step.comment.startswith("i-local, online")
    row = next(line.split() for line in instances.stdout.splitlines() if line.startswith("i-local"))
    assert row[:2] == ["i-local", "yes"], instances

    ran = _find(outcomes, r"cloudassist run ")
    assert f"hello from {socket.gethostname()}\n" == ran.stdout, ran
    status = _find(outcomes, r"^echo \$\?")
    assert status.step.comment.startswith("3:")
    assert status.stdout == "3\n", f"the remote exit code\n{ran}\n{status}\n{local.logs()}"

    results = _find(outcomes, r"cloudassist results\b")
    header, *rows = results.stdout.splitlines()
    assert {"STATE", "EXIT", "OUTPUT", "ERROR"} <= set(header.split()), results
    assert any(r.split()[1:3] == ["i-local", "FAILED"] and " 3 " in r for r in rows), results

    # The saved command with a custom parameter, and the ids the README keeps in variables.
    assert re.fullmatch(r"c-[0-9a-z]+", _find(outcomes, r"^id=").value)
    invocation = _find(outcomes, r"^inv=")
    assert re.fullmatch(r"t-[0-9a-z]+", invocation.value), invocation
    watch = _find(outcomes, r"cloudassist watch ")
    assert "hello, i-local\n" in watch.stdout, watch
    output = _find(outcomes, r"cloudassist output ")
    assert output.stdout == "hello, i-local\n", output
    listed = json.loads(_find(outcomes, r"cloudassist invocations --json").stdout)
    assert invocation.value in json.dumps(listed)


def test_the_grpcurl_quick_start_prints_what_the_readme_says(local: Local) -> None:
    outcomes = _run_section(local, "Quick start with grpcurl")

    services = set(_find(outcomes, r" list\b").stdout.split())
    assert {
        "cloudassist.v1.CommandService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    } <= services

    # Every `"key": value` a comment quotes is in what its command printed, or, for an id the
    # command keeps in a variable (`"c-…"`), in that variable.
    promised = 0
    for outcome in outcomes:
        for key, value in JSON_PAIR.findall(outcome.step.comment):
            promised += 1
            if "…" in value:
                assert outcome.step.assigns, outcome
                assert re.fullmatch(value.strip('"').replace("…", "[0-9a-z]+"), outcome.value)
            else:
                assert f'"{key}":{value}' in re.sub(r"\s", "", outcome.stdout), outcome
    assert promised >= 6, "the grpcurl quick start says what its commands print"

    watched = _messages(_find(outcomes, r"/WatchInvocation").stdout)
    data = b"".join(base64.b64decode(m["output"]["data"]) for m in watched if "output" in m)
    assert data == b"hello\n"
    assert watched[-1]["state_change"]["state"] == "EXECUTION_STATE_SUCCESS"
    results = json.loads(_find(outcomes, r"/DescribeInvocationResults").stdout)
    (result,) = results["invocation_results"]
    assert (result["instance_id"], base64.b64decode(result["output"])) == ("i-local", b"hello\n")


def _messages(out: str) -> list[dict[str, Any]]:
    """The JSON messages grpcurl printed for a server stream, one after another."""
    decoder = json.JSONDecoder()
    found: list[dict[str, Any]] = []
    at = 0
    while out[at:].strip():
        at += len(out[at:]) - len(out[at:].lstrip())
        message, at = decoder.raw_decode(out, at)
        found.append(message)
    return found
