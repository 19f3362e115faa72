"""Runs one script as a process group: output pumped in order, the whole tree killed on stop.

stdout and stderr share one pipe, so the output keeps the order the script wrote it in. The
script runs from a private temporary file in its own session (process group); stop and timeout
send SIGTERM to the group and to any descendant that left it, then SIGKILL after a grace.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import logging
import os
import pwd
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cloudassist.agent.journal import process_start_time
from cloudassist.common.task_errors import DIRECTORY_NOT_ABSOLUTE, DIRECTORY_NOT_ACCESSIBLE

log = logging.getLogger(__name__)

STANDARD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
READ_SIZE = 256 * 1024
# The pipe's capacity (Linux allows up to /proc/sys/fs/pipe-max-size, 1 MiB by default).
PIPE_SIZE = 1024 * 1024
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)
SCRIPT_FILE = "{{ACS::ScriptFile}}"
PWSH_FLAGS = "-NoLogo -NoProfile -NonInteractive -File"
# After the script exits, how long to wait for background children to close the pipe.
DRAIN_SECONDS = 1.0
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
# How a script run as another user enters its working directory as that user, then becomes the
# script; a refusal goes to stdin, the write end of a pipe (the script's stdin is /dev/null).
ENTER_AS_USER = (
    'cd -P -- "$1" 2>/dev/null || { echo refused >&0; exit 126; }; shift; exec "$@" </dev/null'
)


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
    script_path: str  # the script file, or its private directory (another user's)


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


def script_name(task_id: str, command_type: str) -> str:
    """The script's file name: the task id where it is a plain name (it comes from the
    server), else a digest of it; PowerShell's -File runs only files named *.ps1."""
    name = task_id if SAFE_NAME.fullmatch(task_id) else hashlib.sha256(task_id.encode()).hexdigest()
    return f"{name}.ps1" if command_type == "RUN_POWERSHELL_SCRIPT" else name


def plan_launch(
    command_type: str,
    script: bytes,
    working_dir: str,
    username: str,
    task_env: dict[str, str],
    launcher: str = "",
    powershell: str = "",
    *,
    scripts_dir: Path,
    name: str = "script",
) -> LaunchPlan:
    """Checks the task can run here and writes its script: to `scripts_dir/name` (private to
    the agent's user), or, for a script that runs as another user, to a private temporary
    directory of that user's."""
    if command_type == "RUN_POWERSHELL_SCRIPT" and powershell:
        if not launcher:
            launcher = f"{shlex.quote(powershell)} {PWSH_FLAGS} {SCRIPT_FILE}"
    elif command_type != "RUN_SHELL_SCRIPT":
        raise LaunchError(
            "CommandNotApplicable", f"{command_type} scripts do not run on this instance"
        )
    if working_dir and not os.path.isabs(working_dir):  # never the agent's own current one
        raise LaunchError(DIRECTORY_NOT_ABSOLUTE, f"working directory {working_dir!r} is relative")
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
        script_path = tempfile.mkdtemp(prefix="cloudassist-")
        path = Path(script_path) / name
    else:
        path = scripts_dir / name
        script_path = str(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "wb") as out:
        out.write(script)
    if run_as is not None:
        os.chown(script_path, run_as.uid, run_as.gid)
        os.chown(path, run_as.uid, run_as.gid)
    try:
        argv = _argv(launcher, script, str(path))
    except LaunchError:
        remove_script(script_path)
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
    return LaunchPlan(argv=argv, cwd=cwd, env=env, run_as=run_as, script_path=script_path)


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


def remove_script(script_path: str) -> None:
    """Removes a task's script: its file, or its private directory."""
    if not script_path:
        return
    if os.path.isdir(script_path):
        shutil.rmtree(script_path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(script_path)


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


def _spawn(plan: LaunchPlan) -> tuple[subprocess.Popen[bytes], int | None]:
    """Starts the script in a session of its own, stdout and stderr on one pipe. Without a
    change of user, CPython starts it with vfork(), the cheapest way the standard library
    has that can also chdir and setsid (posix_spawn can do neither before Python 3.13). As
    another user, the child would chdir before it drops its privileges: ENTER_AS_USER does it
    after, and the read end of its pipe is returned too (None: the script has started)."""
    run_as = plan.run_as
    argv, cwd, stdin, entered, told = plan.argv, plan.cwd, subprocess.DEVNULL, None, None
    if run_as is not None:
        entered, told = os.pipe()
        argv, cwd, stdin = ["/bin/sh", "-c", ENTER_AS_USER, "sh", cwd, *argv], "/", told
    try:
        proc = subprocess.Popen(
            argv,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=plan.env,
            start_new_session=True,
            user=run_as.uid if run_as else None,
            group=run_as.gid if run_as else None,
            extra_groups=run_as.groups if run_as else None,
        )
    except BaseException as exc:
        if entered is not None:
            os.close(entered)
        if isinstance(exc, OSError) and exc.filename == plan.cwd:  # the agent's own user
            raise LaunchError(
                DIRECTORY_NOT_ACCESSIBLE, f"cannot enter working directory {plan.cwd!r}: {exc}"
            ) from exc
        raise
    finally:
        if told is not None:
            os.close(told)
    if entered is not None:
        os.set_blocking(entered, False)
    return proc, entered


def _exited(proc: subprocess.Popen[bytes]) -> asyncio.Future[int]:
    """A future of the process's own exit status, however long its children hold the pipe:
    a pidfd the event loop watches (Linux 5.3+), else a thread that waits."""
    loop = asyncio.get_running_loop()
    try:
        pidfd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):
        return asyncio.ensure_future(loop.run_in_executor(None, proc.wait))
    exited: asyncio.Future[int] = loop.create_future()

    def readable() -> None:
        code = proc.poll()
        if code is not None:
            loop.remove_reader(pidfd)
            os.close(pidfd)
            if not exited.done():
                exited.set_result(code)

    def cancelled(future: asyncio.Future[int]) -> None:
        if future.cancelled():
            loop.remove_reader(pidfd)
            with contextlib.suppress(OSError):
                os.close(pidfd)

    loop.add_reader(pidfd, readable)
    exited.add_done_callback(cancelled)
    return exited


async def _readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


OutputSink = Callable[[bytes], Awaitable[None] | None]


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

    async def run(self, on_started: Callable[[int], None], on_output: OutputSink) -> ProcessOutcome:
        """Runs the script; `on_output` gets its output in order (when it returns an
        awaitable, reading waits for it: backpressure)."""
        proc, entered = _spawn(self._plan)
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        os.set_blocking(fd, False)
        with contextlib.suppress(OSError):  # fewer, larger reads of a chatty script
            fcntl.fcntl(fd, F_SETPIPE_SZ, PIPE_SIZE)
        if entered is not None:
            await self._enter(proc, entered)
        on_started(proc.pid)
        pump = asyncio.create_task(self._pump(fd, on_output))
        exited = _exited(proc)
        stop: asyncio.Future[Any] = asyncio.create_task(self._stop.wait())
        kind = "finished"
        try:
            waited: set[asyncio.Future[Any]] = {exited, stop}
            done, _ = await asyncio.wait(
                waited, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
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
                await asyncio.to_thread(proc.wait)
            if not pump.done():
                pump.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pump
            proc.stdout.close()
        code = proc.returncode if proc.returncode is not None else -signal.SIGKILL
        return ProcessOutcome(kind, code if code >= 0 else 128 - code)

    async def _enter(self, proc: subprocess.Popen[bytes], entered: int) -> None:
        """Waits until a script that runs as another user has entered its working directory
        and started; LaunchError, the process gone, if that user could not enter it."""
        try:
            # One write (the refusal) or the end of the pipe (the script started).
            await asyncio.wait_for(_readable(entered), self._timeout)
            if os.read(entered, 64):
                user = self._plan.run_as.name if self._plan.run_as else ""
                raise LaunchError(
                    DIRECTORY_NOT_ACCESSIBLE,
                    f"the user {user} cannot enter working directory {self._plan.cwd!r}",
                )
        except BaseException:  # refused, timed out (a directory that hangs) or cancelled
            await kill_tree(proc.pid, 0)
            await asyncio.to_thread(proc.wait)
            assert proc.stdout is not None
            proc.stdout.close()
            raise
        finally:
            os.close(entered)

    @staticmethod
    async def _pump(fd: int, on_output: OutputSink) -> None:
        while True:
            try:
                data = os.read(fd, READ_SIZE)
            except BlockingIOError:
                await _readable(fd)
                continue
            if not data:
                return
            pending = on_output(data)
            if pending is not None:
                await pending
