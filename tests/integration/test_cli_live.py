"""The CLI's live view in a real terminal: `cloudassist run` and `watch` inside tmux."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import Cluster
from tests.support import wait_until

CLI = str(Path(sys.executable).parent / "cloudassist")
EXIT_MARK = "exit status "


class Terminal:
    """A tmux server of our own (its own socket) with one 160x50 pane running a command.

    After the command ends the pane prints its exit status and stays, so the screen can be
    read; close() kills this tmux server only."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        tmux = shutil.which("tmux")
        if tmux is None:
            pytest.fail("tmux is not installed: the live view tests need it (apt-get install tmux)")
        self.tmux = tmux
        self.socket = f"cloudassist-test-{uuid.uuid4().hex[:12]}"
        settings = [f"{k}={v}" for k, v in env.items()]
        # `trap : INT`: Ctrl-C reaches the command, and the shell lives on to say how it ended.
        shell = (
            f"trap : INT; env -u NO_COLOR {shlex.join(settings + command)}; "
            f'echo "{EXIT_MARK}$?"; exec cat'
        )
        self._run("new-session", "-d", "-x", "160", "-y", "50", "-s", "live", "sh", "-c", shell)
        # tmux leaves its socket file behind when its server is killed.
        self.socket_path = Path(self._run("display-message", "-p", "#{socket_path}").strip())

    def _run(self, *args: str) -> str:
        done = subprocess.run(
            [self.tmux, "-L", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
        return done.stdout

    def screen(self, escapes: bool = False) -> str:
        """What the pane shows, with its scrollback; with `escapes`, its colours too."""
        colours = ["-e"] if escapes else []
        return self._run("capture-pane", "-p", "-S", "-", *colours, "-t", "live")

    def wait_for(self, condition: Callable[[str], bool], what: str, timeout: float = 30) -> str:
        seen = [""]

        def shown() -> bool:
            seen[0] = self.screen()
            return condition(seen[0])

        try:
            wait_until(shown, timeout, what)
        except TimeoutError as error:
            raise AssertionError(f"{error}; the screen shows:\n{seen[0]}") from None
        return seen[0]

    def press(self, *keys: str) -> None:
        self._run("send-keys", "-t", "live", *keys)

    def close(self) -> None:
        subprocess.run(
            [self.tmux, "-L", self.socket, "kill-server"], capture_output=True, timeout=10
        )
        self.socket_path.unlink(missing_ok=True)


def cli_command(cluster: Cluster, *args: str) -> tuple[list[str], dict[str, str]]:
    return [CLI, "--server", cluster.server.address, *args], {
        "CLOUDASSIST_API_KEY": cluster.server.admin_key
    }


# Each instance says it started; i-a ends at once, i-b (exit 3) and i-c when their gate file
# appears, so the test sees the view while two of three still run.
GATED = """\
id={{ACS::InstanceId}}
echo "started on $id"
case $id in i-a) exit 0 ;; i-b) code=3 ;; *) code=0 ;; esac
while [ ! -e {{gates}}/$id ]; do sleep 0.05; done
echo "released $id"
exit $code
"""


def row(screen: str, *cells: str) -> bool:
    """A summary table row: the cells in order, separated by column padding."""
    return re.search(r"^" + r"\s+".join(cells) + r"\s*$", screen, re.MULTILINE) is not None


def test_run_shows_live_progress_then_a_summary_table(cluster: Cluster, tmp_path: Path) -> None:
    gates = tmp_path / "gates"
    gates.mkdir()
    command, env = cli_command(
        cluster, "run", "-i", "i-a", "-i", "i-b", "-i", "i-c", "-p", f"gates={gates}", GATED
    )
    terminal = Terminal(command, env)
    try:
        # Running is reported when an agent takes the task; its first output comes after.
        started = ("1 done, 2 running, 0 failed, 0 pending", "i-b | started", "i-c | started")
        screen = terminal.wait_for(
            lambda s: all(text in s for text in started), "i-a done, i-b and i-c running"
        )
        assert "i-a: SUCCESS, exit 0" in screen
        assert "i-b:" not in screen  # no line for an instance that has not ended
        assert EXIT_MARK not in screen

        (gates / "i-b").touch()
        (gates / "i-c").touch()
        screen = terminal.wait_for(lambda s: EXIT_MARK in s, "the run to end")
        assert f"{EXIT_MARK}3" in screen  # i-b's exit code
        assert "i-b | released i-b" in screen
        assert "i-b: FAILED, exit 3" in screen
        assert "i-c: SUCCESS, exit 0" in screen
        assert row(screen, "INSTANCE", "STATUS", "EXIT", "DURATION", "ERROR")
        assert row(screen, "i-a", "SUCCESS", "0", r"\d+\.\ds", "-")
        assert row(screen, "i-b", "FAILED", "3", r"\d+\.\ds", "ExitCodeNonzero")
        assert row(screen, "i-c", "SUCCESS", "0", r"\d+\.\ds", "-")
        assert "2 done, 0 running, 1 failed, 0 pending" in screen
        # The status line was redrawn in place: only the final one is left on the screen.
        assert screen.count(" pending  [") == 1

        colored = terminal.screen(escapes=True)
        assert re.search(r"\x1b\[[0-9;]*32m" + "SUCCESS", colored), colored
        assert re.search(r"\x1b\[[0-9;]*31m" + "FAILED", colored), colored
    finally:
        terminal.close()
        for instance_id in ("i-b", "i-c"):
            (gates / instance_id).touch()


def test_ctrl_c_stops_following_and_says_how_to_stop_the_run(
    cluster: Cluster, tmp_path: Path
) -> None:
    command, env = cli_command(
        cluster, "run", "-i", "i-a", "-i", "i-b", "-p", f"gates={tmp_path}", GATED
    )
    terminal = Terminal(command, env)
    try:
        terminal.wait_for(lambda s: "1 done, 1 running" in s, "i-b running")
        terminal.press("C-c")
        screen = terminal.wait_for(lambda s: EXIT_MARK in s, "the CLI to exit")
        assert f"{EXIT_MARK}130" in screen
        assert re.search(r"to stop it: cloudassist stop t-\S+$", screen, re.M), screen
        # The status line was left as it was, and the terminal on a line of its own.
        assert re.search(r"^1 done, 1 running, 0 failed, 0 pending  \[[0-9.ms]+\]", screen, re.M)
    finally:
        terminal.close()
        (tmp_path / "i-b").touch()


def test_watch_uses_the_live_view_and_no_color_turns_colours_off(cluster: Cluster) -> None:
    done = subprocess.run(
        [CLI, "--server", cluster.server.address, "--json", "run", "-i", "i-b", "-i", "i-c",
         "echo hi from $(hostname) >/dev/null; sleep 0.2; exit 0"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "CLOUDASSIST_API_KEY": cluster.server.admin_key},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    invoke_id = json.loads(done.stdout.splitlines()[0])["invocation"]["invoke_id"]

    command, env = cli_command(cluster, "watch", invoke_id)
    terminal = Terminal(command, {**env, "NO_COLOR": "1"})
    try:
        screen = terminal.wait_for(lambda s: EXIT_MARK in s, "the watch to end")
        assert f"{EXIT_MARK}0" in screen
        # Ended before the watch began: durations come from the server's results.
        assert row(screen, "i-b", "SUCCESS", "0", r"\d+\.\ds", "-")
        assert row(screen, "i-c", "SUCCESS", "0", r"\d+\.\ds", "-")
        assert "2 done, 0 running, 0 failed, 0 pending" in screen
        assert "\x1b[3" not in terminal.screen(escapes=True)
    finally:
        terminal.close()
