"""The agent's side of AgentService.Connect: one stream, reconnected with backoff, resumed.

Per connection: one reader (dispatch, cancel, ack), one writer draining a bounded outbox, an
uploader that turns the spool into messages (accepted, output from the last acknowledged
offset, results), and a heartbeat. Everything the server has not acknowledged stays in the
spool and is sent again on the next connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import platform
import random
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ParamSpec, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from agent import __version__
from agent.config import AgentConfig
from agent.executor import (
    LaunchError,
    LaunchPlan,
    TaskProcess,
    kill_leftover,
    plan_launch,
    process_start_time,
    remove_script,
)
from agent.files import FileToWrite, write_file
from agent.spool import Credentials, Spool, SpooledTask, TaskMeta, TaskResult
from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc, command_pb2, instance_pb2, tag_pb2
from server.logs import about

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CHUNK = 256 * 1024
# Unacknowledged output per task on the wire; the server acknowledges after each commit.
WINDOW = 4 * 1024 * 1024
OUTBOX = 64

CHANNEL_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 20_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 8 * 1024 * 1024),
    # The agent reconnects on its own schedule (backoff with jitter below).
    ("grpc.enable_retries", 0),
]


def now_ms() -> int:
    return int(time.time() * 1000)


def _ids(meta: TaskMeta) -> dict[str, object]:
    """The `extra` of a log line about a task: the server's record and invocation ids."""
    return about(record_id=meta.task_id, invoke_id=meta.invoke_id)


def _ts(ms: int | None) -> Timestamp | None:
    if ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


@dataclass(frozen=True)
class Script:
    """What a dispatch says to run, as it arrived (it is not kept in the spool)."""

    content: bytes
    env: dict[str, str]
    launcher: str = ""
    powershell: str = ""  # the agent's pwsh, when it runs PowerShell
    file: FileToWrite | None = None  # SendFile: write the content here instead of running it


@dataclass
class HeldTask:
    """A task the agent holds, and how far the current connection has got with it."""

    spooled: SpooledTask
    process: TaskProcess | None = None
    runner: asyncio.Task[None] | None = None
    acked: int = 0
    sent: int = 0
    announced: bool = False
    result_sent: bool = False
    stop_requested: str = ""  # "", "stop" or "timeout"
    forget_when_done: bool = False

    @property
    def meta(self) -> TaskMeta:
        return self.spooled.meta


@dataclass
class Backoff:
    """Exponential backoff with full jitter, so a fleet does not reconnect in step."""

    cap: float
    base: float = 0.5
    attempts: int = field(default=0)

    def next_delay(self) -> float:
        delay = random.uniform(0, min(self.cap, self.base * 2**self.attempts))
        self.attempts = min(self.attempts + 1, 30)
        return delay

    def reset(self) -> None:
        self.attempts = 0


class Agent:
    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.spool = Spool(config.state_dir)
        self.credentials = self.spool.credentials()
        # Several servers (comma-separated): the first, then each reconnect tries the next.
        self._servers = [a.strip() for a in config.server.split(",") if a.strip()]
        self._server_index = 0
        self.tasks: dict[str, HeldTask] = {}
        self._changed = asyncio.Event()
        self._io = ThreadPoolExecutor(1, thread_name_prefix="spool-io")
        self._stopping = asyncio.Event()
        self._call: aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse] | None = None
        self.connected = asyncio.Event()
        # Read once: a boot id cannot change while the agent runs.
        self.boot_id = _boot_id(config.boot_id_file)
        self.powershell = _powershell(config.powershell)

    async def _disk(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    # Start-up ---------------------------------------------------------------------------

    async def recover(self) -> None:
        """Loads the spool; tasks that were running when the agent stopped are killed and
        reported as ClientRestarted, with the output they had produced."""
        for spooled in await self._disk(self.spool.load):
            meta = spooled.meta
            if meta.result is None:
                if meta.pid is not None and await self._disk(
                    kill_leftover, meta.pid, meta.proc_start
                ):
                    log.warning(
                        "killed process group %d left from a task", meta.pid, extra=_ids(meta)
                    )
                remove_script(meta.script_dir)
                meta.produced = max(meta.produced, spooled.size)
                meta.result = TaskResult(
                    "error",
                    now_ms(),
                    error_code="ClientRestarted",
                    error_info="the agent restarted while the script was running",
                )
                await self._disk(spooled.save)
            self.tasks[meta.task_id] = HeldTask(spooled)
        if self.tasks:
            log.info("resuming %d tasks from %s", len(self.tasks), self.config.state_dir)

    @property
    def instance_id(self) -> str:
        return self.credentials.instance_id if self.credentials else self.config.instance_id

    # Registration -----------------------------------------------------------------------

    @property
    def server(self) -> str:
        return self._servers[self._server_index % len(self._servers)]

    def _next_server(self) -> None:
        self._server_index += 1

    def _channel(self) -> aio.Channel:
        config = self.config
        if config.ca is None and config.cert is None:
            return aio.insecure_channel(self.server, options=CHANNEL_OPTIONS)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=config.ca.read_bytes() if config.ca else None,
            private_key=config.key.read_bytes() if config.key else None,
            certificate_chain=config.cert.read_bytes() if config.cert else None,
        )
        return aio.secure_channel(self.server, credentials, options=CHANNEL_OPTIONS)

    async def register(self) -> Credentials:
        """The saved credentials, or new ones from the configured activation."""
        config = self.config
        if self.credentials is not None:
            if config.instance_id and config.instance_id != self.credentials.instance_id:
                log.warning(
                    "the state directory holds instance %s; --instance-id %s is ignored",
                    self.credentials.instance_id,
                    config.instance_id,
                )
            return self.credentials
        if not (config.activation_id and config.activation_code):
            raise RegistrationError(
                "this agent is not registered: give --activation-id and --activation-code "
                "(an admin creates them with `cloudassist activations create`)"
            )
        backoff = Backoff(config.max_backoff_seconds)
        while True:
            try:
                async with self._channel() as channel:
                    response = await agent_pb2_grpc.AgentServiceStub(channel).Register(
                        pb.RegisterRequest(
                            activation_id=config.activation_id,
                            activation_code=config.activation_code,
                            instance_id=config.instance_id,
                            os_type=_os_type(),
                            hostname=socket.gethostname(),
                        ),
                        timeout=30,
                    )
                break
            except aio.AioRpcError as error:
                retryable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
                if error.code() not in retryable:
                    raise RegistrationError(
                        f"registration refused: {error.code().name}: {error.details()}"
                    ) from error
                log.info("registration: %s; retrying", _brief(error))
                self._next_server()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff.next_delay())
            if self._stopping.is_set():
                raise RegistrationError("stopped before registering")
        if config.region_id and response.region_id != config.region_id:
            log.warning(
                "the activation is for region %s, not %s", response.region_id, config.region_id
            )
        credentials = Credentials(
            response.instance_id, response.instance_secret, response.region_id
        )
        await self._disk(self.spool.save_credentials, credentials)
        log.info("registered as %s in %s", credentials.instance_id, credentials.region_id)
        self.credentials = credentials
        return credentials

    # Connection loop --------------------------------------------------------------------

    async def run(self) -> None:
        await self.register()
        await self.recover()
        backoff = Backoff(self.config.max_backoff_seconds)
        while not self._stopping.is_set():
            try:
                welcomed = await self._session(backoff)
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # Only the call was cancelled: by stop(), or by a writer that failed.
                welcomed = False
            except Exception as exc:
                welcomed = False
                log.info("connection to %s ended: %s", self.server, _brief(exc))
            finally:
                self.connected.clear()
            if self._stopping.is_set():
                break
            self._next_server()
            delay = random.uniform(0, 1) if welcomed else backoff.next_delay()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), delay)
        await self._shutdown_tasks()

    def stop(self) -> None:
        self._stopping.set()
        if self._call is not None:
            self._call.cancel()

    def _hello(self) -> pb.Hello:
        assert self.credentials is not None
        return pb.Hello(
            instance_id=self.credentials.instance_id,
            instance_secret=self.credentials.instance_secret,
            region_id=self.credentials.region_id,
            os_type=_os_type(),
            hostname=socket.gethostname(),
            agent_version=__version__,
            tags=[tag_pb2.Tag(key=k, value=v) for k, v in sorted(self.config.tags.items())],
            boot_id=self.boot_id,
            extra_command_types=(
                [command_pb2.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT] if self.powershell else []
            ),
            tasks=[
                pb.TaskProgress(
                    task_id=task_id,
                    output_size=held.spooled.size,
                    finished=held.meta.result is not None,
                )
                for task_id, held in self.tasks.items()
            ],
        )

    async def _session(self, backoff: Backoff) -> bool:
        """One connection, until it breaks or the server asks to reconnect.

        Returns whether the server welcomed the agent (then the next attempt need not wait).
        """
        async with self._channel() as channel:
            call = agent_pb2_grpc.AgentServiceStub(channel).Connect()
            self._call = call
            await call.write(pb.ConnectRequest(hello=self._hello()))
            first = await call.read()
            welcomed = isinstance(first, pb.ConnectResponse) and first.HasField("welcome")
            if not welcomed or not isinstance(first, pb.ConnectResponse):
                raise ConnectionError("the server did not answer hello with welcome")
            await self._welcome(first.welcome)
            backoff.reset()
            self.connected.set()
            log.info(
                "connected to %s as %s",
                self.server,
                self.instance_id,
                extra=about(instance_id=self.instance_id),
            )
            outbox: asyncio.Queue[pb.ConnectRequest] = asyncio.Queue(OUTBOX)
            helpers = [
                asyncio.create_task(self._writer(call, outbox)),
                asyncio.create_task(self._uploader(outbox)),
                asyncio.create_task(
                    self._heartbeats(outbox, max(1, first.welcome.heartbeat_interval_seconds))
                ),
            ]
            try:
                while True:
                    message = await call.read()
                    if not isinstance(message, pb.ConnectResponse):  # end of stream
                        return True
                    if message.WhichOneof("message") == "reconnect":
                        log.info("server asked to reconnect: %s", message.reconnect.reason)
                        return True
                    await self._handle(message)
            finally:
                for helper in helpers:
                    helper.cancel()
                for helper in helpers:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await helper
                call.cancel()
                self._call = None

    async def _welcome(self, welcome: pb.Welcome) -> None:
        acks = {ack.task_id: ack for ack in welcome.acks}
        for task_id, held in list(self.tasks.items()):
            ack = acks.get(task_id)
            held.acked = held.sent = ack.offset if ack else 0
            held.announced = True  # the hello told the server about it
            held.result_sent = False
            if ack and ack.result_stored:
                await self._forget_or_mark(held)
        self._changed.set()

    async def _forget_or_mark(self, held: HeldTask) -> None:
        if held.meta.result is not None:
            await self._disk(self.spool.forget, held.spooled)
            self.tasks.pop(held.meta.task_id, None)
        else:
            held.forget_when_done = True

    async def _writer(
        self,
        call: aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse],
        outbox: asyncio.Queue[pb.ConnectRequest],
    ) -> None:
        try:
            while True:
                await call.write(await outbox.get())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("sending to the server failed: %s", _brief(exc))
            call.cancel()

    async def _heartbeats(self, outbox: asyncio.Queue[pb.ConnectRequest], interval: int) -> None:
        while True:
            await asyncio.sleep(interval)
            beat = pb.Heartbeat()
            beat.time.FromMilliseconds(now_ms())
            await outbox.put(pb.ConnectRequest(heartbeat=beat))

    # Server messages --------------------------------------------------------------------

    async def _handle(self, message: pb.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "dispatch":
            await self._dispatch(message.dispatch)
        elif kind == "cancel":
            self._cancel(message.cancel)
        elif kind == "ack":
            await self._ack(message.ack)
        elif kind == "heartbeat":
            pass
        else:
            log.warning("unexpected %s message from the server", kind)

    async def _dispatch(self, dispatch: pb.Dispatch) -> None:
        task_id = dispatch.task_id
        if task_id in self.tasks or not task_id or self.spool.knows(task_id):
            log.info(
                "task dispatched again; it runs only once",
                extra=about(record_id=task_id, invoke_id=dispatch.invoke_id),
            )
            return
        meta = TaskMeta(
            task_id=task_id,
            invoke_id=dispatch.invoke_id,
            command_type=command_pb2.CommandType.Name(dispatch.command_type).removeprefix(
                "COMMAND_TYPE_"
            ),
            timeout_seconds=dispatch.timeout_seconds,
            working_dir=dispatch.working_dir,
            username=dispatch.username,
            output_limit=dispatch.output_limit,
            accepted_ms=now_ms(),
        )
        log.info("task accepted", extra=_ids(meta))
        # Written to disk by the task's first step (one trip to the I/O thread with its script).
        held = HeldTask(self.spool.prepare(meta))
        self.tasks[task_id] = held
        held.runner = asyncio.create_task(
            self._run(
                held,
                Script(
                    dispatch.script,
                    dict(dispatch.env),
                    dispatch.launcher,
                    self.powershell,
                    _file_to_write(dispatch),
                ),
            )
        )
        self._changed.set()

    def _cancel(self, cancel: pb.Cancel) -> None:
        held = self.tasks.get(cancel.task_id)
        if held is None or held.meta.result is not None:
            return
        timeout = cancel.reason == pb.STOP_REASON_TIMEOUT
        held.stop_requested = "timeout" if timeout else "stop"
        if held.process is not None:
            held.process.request_stop(timeout=timeout)

    async def _ack(self, ack: pb.Ack) -> None:
        held = self.tasks.get(ack.task_id)
        if held is None:
            return
        held.acked = max(held.acked, ack.offset)
        held.spooled.release(held.acked)
        if ack.rewind:
            held.sent = ack.offset
            held.result_sent = False
        if ack.result_stored:
            await self._forget_or_mark(held)
        self._changed.set()

    # Running tasks ----------------------------------------------------------------------

    async def _run(self, held: HeldTask, script: Script) -> None:
        meta = held.meta
        try:
            result = await self._execute(held, script)
        except asyncio.CancelledError:
            raise
        except LaunchError as error:
            result = TaskResult("error", now_ms(), error_code=error.code, error_info=error.info)
        except Exception as exc:
            log.exception("task failed to run", extra=_ids(meta))
            result = TaskResult(
                "error", now_ms(), error_code="ExecutionException", error_info=str(exc)[:1000]
            )
        meta.result = result
        meta.produced = max(meta.produced, held.spooled.size)
        await self._disk(_save_and_clean, held.spooled)
        log.info("task ended: %s, exit code %s", result.kind, result.exit_code, extra=_ids(meta))
        if held.forget_when_done:
            await self._forget_or_mark(held)
        self._changed.set()

    async def _execute(self, held: HeldTask, script: Script) -> TaskResult:
        meta = held.meta
        if held.stop_requested:
            return TaskResult(
                "timed_out" if held.stop_requested == "timeout" else "stopped", now_ms()
            )
        if script.file is not None:
            meta.started = True
            meta.start_ms = now_ms()
            await self._disk(_spool_and_write, held.spooled, script.content, script.file)
            return TaskResult("finished", now_ms(), exit_code=0)
        builtins = {"CLOUDASSIST_TASK_ID": meta.task_id, "CLOUDASSIST_INVOKE_ID": meta.invoke_id}
        script = replace(script, env={**script.env, **builtins})
        plan = await self._disk(_spool_and_plan, held.spooled, script)
        process = TaskProcess(plan, meta.timeout_seconds, self.config.kill_grace_seconds)
        held.process = process
        if held.stop_requested:
            process.request_stop(timeout=held.stop_requested == "timeout")

        async def started(pid: int) -> None:
            meta.started = True
            meta.pid = pid
            meta.start_ms = now_ms()
            await self._disk(_record_start, held.spooled, pid)

        async def output(data: bytes) -> None:
            meta.produced += len(data)
            room = meta.output_limit - held.spooled.size
            if room > 0:
                kept = data[:room]
                await self._disk(held.spooled.append, kept)
                held.spooled.remember(kept, WINDOW)
                self._changed.set()

        outcome = await process.run(started, output)
        return TaskResult(outcome.kind, now_ms(), exit_code=outcome.exit_code)

    async def _shutdown_tasks(self) -> None:
        """The agent is stopping: kill running scripts; their results are reported as
        ClientRestarted on the next start (with the output they produced)."""
        running = [h for h in self.tasks.values() if h.runner is not None and not h.runner.done()]
        for held in running:
            if held.process is not None:
                held.process.request_stop(timeout=False)
        if running:
            await asyncio.gather(*(h.runner for h in running if h.runner), return_exceptions=True)
            for held in running:
                held.meta.result = TaskResult(
                    "error",
                    now_ms(),
                    error_code="ClientRestarted",
                    error_info="the agent stopped while the script was running",
                )
                await self._disk(held.spooled.save)
        self._io.shutdown(wait=True)

    # Uploading --------------------------------------------------------------------------

    async def _uploader(self, outbox: asyncio.Queue[pb.ConnectRequest]) -> None:
        while True:
            self._changed.clear()
            progressed = False
            for held in list(self.tasks.values()):
                message = await self._next_message(held)
                if message is not None:
                    await outbox.put(message)
                    progressed = True
            if not progressed:
                await self._changed.wait()

    async def _next_message(self, held: HeldTask) -> pb.ConnectRequest | None:
        meta = held.meta
        spooled = held.spooled
        result = meta.result
        if not held.announced:
            held.announced = True
            if not (result is not None and result.kind == "error" and not meta.started):
                return pb.ConnectRequest(
                    task_accepted=pb.TaskAccepted(
                        task_id=meta.task_id, start_time=_ts(meta.accepted_ms)
                    )
                )
        in_flight = held.sent - held.acked
        if held.sent < spooled.size and in_flight < WINDOW:
            length = min(CHUNK, spooled.size - held.sent, WINDOW - in_flight)
            data = spooled.cached(held.sent, length)
            if data is None:  # older than what memory keeps (a resume): read it from disk
                data = await self._disk(spooled.read, held.sent, length)
            offset = held.sent
            held.sent += len(data)
            return pb.ConnectRequest(
                output=pb.TaskOutput(task_id=meta.task_id, offset=offset, data=data)
            )
        if result is not None and not held.result_sent and held.sent >= spooled.size:
            held.result_sent = True
            return _result_message(meta, result)
        return None


def _spool_and_plan(spooled: SpooledTask, script: Script) -> LaunchPlan:
    """The task's first step on the I/O thread: its spool directory, then its script."""
    spooled.create()
    meta = spooled.meta
    plan = plan_launch(
        meta.command_type,
        script.content,
        meta.working_dir,
        meta.username,
        script.env,
        script.launcher,
        script.powershell,
    )
    meta.script_dir = plan.script_dir
    return plan


def _spool_and_write(spooled: SpooledTask, content: bytes, file: FileToWrite) -> None:
    spooled.create()
    write_file(file, content)


def _file_to_write(dispatch: pb.Dispatch) -> FileToWrite | None:
    if not dispatch.HasField("file"):
        return None
    f = dispatch.file
    return FileToWrite(f.name, f.target_dir, f.mode, f.owner, f.group, f.overwrite)


def _record_start(spooled: SpooledTask, pid: int) -> None:
    spooled.meta.proc_start = process_start_time(pid)
    spooled.save()


def _save_and_clean(spooled: SpooledTask) -> None:
    """Stores the result and removes the script's private directory."""
    if not spooled.directory.exists():  # stopped before its first step
        spooled.create()
    spooled.save()
    remove_script(spooled.meta.script_dir)


def _result_message(meta: TaskMeta, result: TaskResult) -> pb.ConnectRequest:
    if result.kind == "finished":
        return pb.ConnectRequest(
            task_finished=pb.TaskFinished(
                task_id=meta.task_id,
                exit_code=result.exit_code or 0,
                output_size=meta.produced,
                start_time=_ts(meta.start_ms),
                finish_time=_ts(result.time_ms),
            )
        )
    if result.kind in ("stopped", "timed_out"):
        timed_out = result.kind == "timed_out"
        return pb.ConnectRequest(
            task_stopped=pb.TaskStopped(
                task_id=meta.task_id,
                reason=pb.STOP_REASON_TIMEOUT if timed_out else pb.STOP_REASON_STOP,
                started=meta.started,
                exit_code=result.exit_code or 0,
                output_size=meta.produced,
                stop_time=_ts(result.time_ms),
            )
        )
    return pb.ConnectRequest(
        task_error=pb.TaskError(
            task_id=meta.task_id,
            error_code=result.error_code,
            error_info=result.error_info,
            output_size=meta.produced,
        )
    )


class RegistrationError(Exception):
    """The agent cannot register (no activation, or the server refused it)."""


def _powershell(pwsh: str) -> str:
    """The pwsh to run PowerShell scripts with, if one is configured and present."""
    if pwsh and shutil.which(pwsh) is None:
        log.warning("--powershell %s: not found; PowerShell scripts will not run here", pwsh)
        return ""
    return pwsh


def _boot_id(path: Path) -> str:
    """This boot's id, or "" where the system does not say (reboot modes never fire then)."""
    try:
        return path.read_text().strip()[:64]
    except OSError:
        log.warning("no boot id in %s: reboot-mode invocations will not run here", path)
        return ""


def _os_type() -> instance_pb2.OsType.ValueType:
    if platform.system() == "Windows":
        return instance_pb2.OS_TYPE_WINDOWS
    return instance_pb2.OS_TYPE_LINUX


def _brief(exc: BaseException) -> str:
    if isinstance(exc, aio.AioRpcError):
        return f"{exc.code().name}: {exc.details()}"
    return f"{type(exc).__name__}: {exc}"
