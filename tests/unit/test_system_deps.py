"""deploy/system-deps.sh (`make system-deps`, the first step of `make test`): it installs the
missing system packages through apt-get as root or with sudo that asks no password, and
otherwise stops at once with the one command to run. The programs it looks for and the ones it
runs (id, sudo, apt-get, …) are stand-ins on a PATH of their own."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "system-deps.sh"
BASH = shutil.which("bash") or "/bin/bash"
# What the script looks for, by command; postgresql's initdb is looked for with `ls` too.
PRESENT = (
    "make", "python3", "node", "npm", "chromium", "chromedriver", "systemd-analyze",
    "systemd-sysusers", "initdb",
)  # fmt: skip


def _stub(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def _run(tmp_path: Path, present: tuple[str, ...], uid: int, sudo: bool) -> tuple[int, str, str]:
    """Runs the script with only `present` (and stand-ins for id, sudo, apt-get) on PATH; its
    exit status, its output, and the apt-get commands it ran."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in present:
        _stub(bin_dir, name, "exit 0")
    _stub(bin_dir, "ls", "exit 2")
    _stub(bin_dir, "id", f"echo {uid}")
    _stub(bin_dir, "apt-get", f'echo "$DEBIAN_FRONTEND apt-get $*" >> {calls}')
    # `sudo -n true` succeeds only when sudo may run without a password.
    gate = 0 if sudo else 1
    _stub(bin_dir, "sudo", f'[ "$1" = -n ] && exit {gate}\necho sudo >> {calls}\nexec "$@"')
    (bin_dir / "env").symlink_to(shutil.which("env") or "/usr/bin/env")
    done = subprocess.run(
        [BASH, str(SCRIPT)], env={"PATH": str(bin_dir)}, capture_output=True, text=True
    )
    ran = calls.read_text() if calls.exists() else ""
    return done.returncode, done.stdout + done.stderr, ran


def test_nothing_missing_does_nothing(tmp_path: Path) -> None:
    assert _run(tmp_path, (*PRESENT, "tmux"), uid=1000, sudo=False) == (0, "", "")


def test_without_root_or_sudo_it_stops_with_the_command_to_run(tmp_path: Path) -> None:
    code, output, ran = _run(tmp_path, PRESENT, uid=1000, sudo=False)
    assert code == 1
    assert output.splitlines()[-1] == "sudo apt-get install -y tmux"
    assert ran == ""


@pytest.mark.parametrize(("uid", "sudo"), [(0, False), (1000, True)])
def test_as_root_or_with_sudo_it_installs_what_is_missing(
    tmp_path: Path, uid: int, sudo: bool
) -> None:
    present = tuple(p for p in PRESENT if p not in ("initdb", "chromedriver"))
    code, output, ran = _run(tmp_path, present, uid=uid, sudo=sudo)
    assert code == 0, output
    assert "installing: postgresql chromium-driver tmux" in output
    apt = [line for line in ran.splitlines() if line != "sudo"]
    assert apt == [
        " apt-get update -qq",
        "noninteractive apt-get install -y -qq postgresql chromium-driver tmux",
    ]
    assert ran.count("sudo") == (2 if sudo else 0)
