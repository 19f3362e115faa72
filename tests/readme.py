"""The README's shell examples as steps to run: each command exactly as the README writes it,
with the comments that say what it prints, run in one bash so that variables carry over."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

# A fenced ```sh block, up to its closing fence.
FENCE = re.compile(r"^```sh\n(.*?)^```$", re.MULTILINE | re.DOTALL)
# What the runner prints after each step: its index, its exit status, the variable it set.
_MARK = re.compile(r"\n\x1e(\d+) (\d+) (.*)\n")
_ASSIGNS = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=")


@dataclass(frozen=True)
class Step:
    command: str  # as the README writes it: continuation lines and trailing comment included
    comment: str  # the comment lines just above it and its own trailing comment, joined

    @property
    def assigns(self) -> str | None:
        """The variable the command sets (`id=$(…)`), if that is what it does."""
        match = _ASSIGNS.match(self.command)
        return match.group(1) if match else None


@dataclass(frozen=True)
class Outcome:
    step: Step
    status: int
    stdout: str
    stderr: str
    value: str  # the value of the variable it sets, after it ran ("" for other commands)

    def __str__(self) -> str:
        return (
            f"$ {self.step.command}\n[exit status {self.status}]\n"
            f"--- stdout ---\n{self.stdout}--- stderr ---\n{self.stderr}"
        )


def section_code(readme: str, heading: str) -> str:
    """The fenced ```sh blocks of the README section under `## heading`, joined in order."""
    start = readme.index(f"\n## {heading}\n")
    end = readme.find("\n## ", start + 1)
    blocks = FENCE.findall(readme[start : end if end != -1 else len(readme)])
    assert blocks, f"README section {heading!r} has no ```sh block"
    return "".join(blocks)


def _complete(text: str) -> bool:
    """True when `text` is whole shell commands (no open quote, substitution or `\\`)."""
    if text.rstrip("\n").endswith("\\"):
        return False
    check = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True, check=False)
    return check.returncode == 0 and not check.stderr


def _trailing_comment(command: str) -> str:
    """The first `# …` comment of a command, outside quotes, to the end of its line."""
    quote = ""
    escaped = False
    for at, char in enumerate(command):
        if escaped:
            escaped = False
        elif char == "\\" and quote != "'":
            escaped = True
        elif quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (at == 0 or command[at - 1].isspace()):
            return command[at + 1 :].split("\n", 1)[0].strip()
    return ""


def steps(code: str) -> list[Step]:
    """The commands of `code`, each with the comment lines above it and its trailing comment.
    A blank line ends a run of comment lines; a command may span lines."""
    found: list[Step] = []
    above: list[str] = []
    lines = code.splitlines()
    at = 0
    while at < len(lines):
        line = lines[at]
        if not line.strip():
            above = []
            at += 1
            continue
        if line.lstrip().startswith("#"):
            above.append(line.lstrip()[1:].strip())
            at += 1
            continue
        end = at + 1
        while not _complete("\n".join(lines[at:end]) + "\n"):
            end += 1
            assert end <= len(lines), f"README command never ends: {lines[at]!r}"
        command = "\n".join(lines[at:end])
        found.append(Step(command, " ".join([*above, _trailing_comment(command)]).strip()))
        above = []
        at = end
    return found


def _script(commands: list[Step], errors: Path) -> str:
    """One bash script: each command as written, its stderr to a file of its own, then a mark
    with its exit status (which the next command still sees as `$?`)."""
    parts = []
    for n, step in enumerate(commands):
        value = f'"${{{step.assigns}-}}"' if step.assigns else '""'
        parts.append(
            f"{{\n{step.command}\n}} 2>{shlex.quote(str(errors / str(n)))}\n"
            f"__readme_status=$?\n"
            f"printf '\\n\\036%s %s %s\\n' {n} \"$__readme_status\" {value}\n"
            f'(exit "$__readme_status")\n'
        )
    return "".join(parts)


def run(
    commands: list[Step], cwd: Path, env: dict[str, str], workdir: Path, timeout: float
) -> list[Outcome]:
    """Runs `commands` in order in one bash in `cwd`; what each printed and its status. On a
    timeout, the shell's whole process group is killed (by its id: the shell's pid) and what
    ran so far is returned."""
    errors = workdir / "stderr"
    errors.mkdir(parents=True, exist_ok=True)
    script = workdir / "readme.sh"
    script.write_text(_script(commands, errors))
    shell = subprocess.Popen(
        ["bash", str(script)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        start_new_session=True,  # its own process group, to stop whatever it started
    )
    try:
        out, _ = shell.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(shell.pid, signal.SIGKILL)
        out, _ = shell.communicate()
    text = out.decode(errors="replace")
    outcomes = []
    start = 0
    for mark in _MARK.finditer(text):
        n = int(mark.group(1))
        stderr = errors / str(n)
        outcomes.append(
            Outcome(
                commands[n],
                int(mark.group(2)),
                text[start : mark.start()],
                stderr.read_text(errors="replace") if stderr.exists() else "",
                mark.group(3),
            )
        )
        start = mark.end()
    return outcomes
