"""Runs one script as a process group: output pumped in order, the whole tree killed on stop.

stdout and stderr share one pipe, so the output keeps the order the script wrote it in. The
script runs from a private temporary file in its own session (process group); stop and timeout
send SIGTERM to the group and to any descendant that left it, then SIGKILL after a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shlex
import shutil
import signal
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_SIZE = 64 * 1024
SCRIPT_FILE = "{{ACS::ScriptFile}}"
PWSH_FLAGS = "-NoLogo -NoProfile -NonInteractive -File"
# After the script exits, how long to wait for background children to close the pipe.
DRAIN_SECONDS = 1.0


class LaunchError(Exception):
    """The task cannot run on this instance; `code` is the product's error code."""

    def __init__(self, code: str, info: str) -> None:
        super().__init__(info)
        self.code = code
        self.info = info


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int
    groups: list[int]
    home: str
    shell: str


@dataclass(frozen=True)
class LaunchPlan:
    argv: list[str]
    cwd: str
    env: dict[str, str]
    run_as: RunAs | None  # None: the agent's own user
    script_dir: str


@dataclass(frozen=True)
class ProcessOutcome:
    kind: str  # finished | stopped | timed_out
    exit_code: int


def _account(username: str) -> tuple[pwd.struct_passwd, bool]:
    """The account to run as, and whether that means switching user."""
    me = pwd.getpwuid(os.geteuid())
    if not username or username == me.pw_name:
        return me, False
    try:
        account = pwd.getpwnam(username)
    except KeyError as exc:
        raise LaunchError("AccountNotExists", f"no user {username!r} on this instance") from exc
    if os.geteuid() != 0:
        raise LaunchError(
            "ExecutionException",
            f"the agent runs as {me.pw_name}, not root, and cannot run scripts as {username}",
        )
    return account, True


def plan_launch(
    command_type: str,
    script: bytes,
    working_dir: str,
    username: str,
    task_env: dict[str, str],
    launcher: str = "",
    powershell: str = "",
) -> LaunchPlan:
    """Checks the task can run here and writes its script to a private temporary directory."""
    if command_type == "RUN_POWERSHELL_SCRIPT" and powershell:
        if not launcher:
            launcher = f"{shlex.quote(powershell)} {PWSH_FLAGS} {SCRIPT_FILE}"
    elif command_type != "RUN_SHELL_SCRIPT":
        raise LaunchError(
            "CommandNotApplicable", f"{command_type} scripts do not run on this instance"
        )
    account, switch = _account(username)
    cwd = working_dir or account.pw_dir
    if not os.path.isdir(cwd):
        raise LaunchError("DirectoryNotExists", f"working directory {cwd!r} does not exist")
    run_as = None
    if switch:
        run_as = RunAs(
            name=account.pw_name,
            uid=account.pw_uid,
            gid=account.pw_gid,
            groups=os.getgrouplist(account.pw_name, account.pw_gid),
            home=account.pw_dir,
            shell=account.pw_shell or "/bin/sh",
        )
    script_dir = tempfile.mkdtemp(prefix="cloudassist-")
    # pwsh -File runs only files named *.ps1.
    name = "script.ps1" if command_type == "RUN_POWERSHELL_SCRIPT" else "script"
    path = Path(script_dir) / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o700)
    with os.fdopen(fd, "wb") as out:
        out.write(script)
    if run_as is not None:
        os.chown(script_dir, run_as.uid, run_as.gid)
        os.chown(path, run_as.uid, run_as.gid)
    try:
        argv = _argv(launcher, script, str(path))
    except LaunchError:
        remove_script(script_dir)
        raise
    env = {
        "PATH": STANDARD_PATH if switch else os.environ.get("PATH", STANDARD_PATH),
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "SHELL": account.pw_shell or "/bin/sh",
        "LANG": os.environ.get("LANG", "C.UTF-8"),
    }
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    # The invocation's variables (and the task's built-ins) go on top of that.
    env.update(task_env)
    return LaunchPlan(argv=argv, cwd=cwd, env=env, run_as=run_as, script_dir=script_dir)


def _argv(launcher: str, script: bytes, path: str) -> list[str]:
    """How to run the script file: the launcher's command line with the file in it, or the
    script's own #! interpreter, or /bin/sh."""
    if not launcher:
        return [path] if script.startswith(b"#!") else ["/bin/sh", path]
    # Split first, then put the path in: a path with spaces stays one argument.
    argv = [word.replace(SCRIPT_FILE, path) for word in shlex.split(launcher)]
    if not argv or shutil.which(argv[0]) is None:
        raise LaunchError(
            "LauncherNotFound",
            f"the launcher's interpreter {argv[0] if argv else ''!r} is not on this instance",
        )
    return argv


def remove_script(script_dir: str) -> None:
    if script_dir:
        shutil.rmtree(script_dir, ignore_errors=True)


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process apart from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def descendants(root: int) -> list[int]:
    """Every live process whose parent chain leads to `root` (Linux /proc)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc") if os.path.isdir("/proc") else []:
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    children: dict[int, list[int]] = {}
    for pid, ppid in parents.items():
        children.setdefault(ppid, []).append(pid)
    found, frontier = [], [root]
    while frontier:
        pid = frontier.pop()
        for child in children.get(pid, []):
            found.append(child)
            frontier.append(child)
    return found


def _signal_all(pgid: int, pids: list[int], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def kill_tree(pgid: int, grace_seconds: float) -> None:
    """SIGTERM to the process group and every descendant, SIGKILL to what is left after
    `grace_seconds`."""
    tree = await asyncio.to_thread(descendants, pgid)
    _signal_all(pgid, tree, signal.SIGTERM)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace_seconds
    # A process group's end cannot be awaited as an event: poll until it is gone.
    while loop.time() < deadline and _group_alive(pgid):  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    tree += [p for p in await asyncio.to_thread(descendants, pgid) if p not in tree]
    _signal_all(pgid, tree, signal.SIGKILL)


def kill_leftover(pid: int, proc_start: str | None) -> bool:
    """Kills a task's process group left over from before an agent restart (if it is still the
    same process). Returns whether anything was killed."""
    if proc_start is None or process_start_time(pid) != proc_start:
        return False
    tree = descendants(pid)
    _signal_all(pid, tree, signal.SIGKILL)
    return True


async def _exit_code(proc: asyncio.subprocess.Process) -> int:
    """Waits for the process itself to exit, even while background children hold its pipe
    (newer Pythons' Process.wait() also waits for the pipe to close)."""
    waiter = asyncio.ensure_future(proc.wait())
    try:
        while not waiter.done():
            if proc.returncode is not None:
                return proc.returncode
            await asyncio.wait({waiter}, timeout=0.1)
        return waiter.result()
    finally:
        waiter.cancel()


class TaskProcess:
    """One running script. `run` returns when it has exited (or been killed)."""

    def __init__(self, plan: LaunchPlan, timeout_seconds: int, kill_grace_seconds: float) -> None:
        self._plan = plan
        self._timeout = timeout_seconds
        self._grace = kill_grace_seconds
        self._stop = asyncio.Event()
        self._stop_kind = "stopped"

    def request_stop(self, *, timeout: bool) -> None:
        self._stop_kind = "timed_out" if timeout else "stopped"
        self._stop.set()

    async def run(
        self,
        on_started: Callable[[int], Awaitable[None]],
        on_output: Callable[[bytes], Awaitable[None]],
    ) -> ProcessOutcome:
        plan = self._plan
        run_as = plan.run_as
        proc = await asyncio.create_subprocess_exec(
            *plan.argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=plan.cwd,
            env=plan.env,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=run_as.groups if run_as else None,
        )
        assert proc.stdout is not None
        await on_started(proc.pid)
        pump = asyncio.create_task(self._pump(proc.stdout, on_output))
        exited = asyncio.create_task(_exit_code(proc))
        stop = asyncio.create_task(self._stop.wait())
        kind = "finished"
        try:
            done, _ = await asyncio.wait(
                {exited, stop}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if exited not in done:
                kind = self._stop_kind if stop in done else "timed_out"
                await kill_tree(proc.pid, self._grace)
                await exited
            try:
                await asyncio.wait_for(asyncio.shield(pump), DRAIN_SECONDS)
            except TimeoutError:
                # Background children still hold the pipe; the script itself is done.
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
        finally:
            stop.cancel()
            if not exited.done():
                await kill_tree(proc.pid, 0)
                exited.cancel()
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return ProcessOutcome(kind, code if code >= 0 else 128 - code)

    @staticmethod
    async def _pump(
        stream: asyncio.StreamReader, on_output: Callable[[bytes], Awaitable[None]]
    ) -> None:
        while data := await stream.read(READ_SIZE):
            await on_output(data)
