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
import os
import platform
import random
import shutil
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from grpc import aio

from agent import __version__
from agent.config import AgentConfig
from agent.executor import (
    LaunchError,
    TaskProcess,
    kill_leftover,
    plan_launch,
    remove_script,
    script_name,
)
from agent.files import FileToWrite, write_file
from agent.journal import Accept, Output, Result, Start, snapshot
from agent.spool import MAX_UNWRITTEN, Credentials, Spool, SpooledTask, TaskMeta, TaskResult
from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import agent_pb2_grpc, command_pb2, instance_pb2, tag_pb2
from server.logs import about

# The error code of a task addressed to another instance (the server's reasons name it too).
INSTANCE_MISMATCH = "InstanceMismatch"

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

CHUNK = 256 * 1024
# Unacknowledged output per task on the wire; the server acknowledges after each commit.
WINDOW = 4 * 1024 * 1024
# Output in one `reports` message (protocol 2), over all its tasks.
REPORT_BYTES = 1024 * 1024
OUTBOX = 64
# The newest protocol this agent speaks.
PROTOCOL = 2
# A task's acceptance waits this long to go out with its output and result (a quick task then
# costs one message up instead of three); a task still running by then is reported anyway.
ACCEPT_HOLD_SECONDS = 0.1
# Output of running tasks gathers this long before it is sent, so a script that prints line
# by line does not cost a message a line.
OUTPUT_LINGER_SECONDS = 0.005

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
    instance_id: str = ""  # the instance the server addressed it to (empty: an older server)


@dataclass
class HeldTask:
    """A task the agent holds, and how far the current connection has got with it."""

    spooled: SpooledTask
    process: TaskProcess | None = None
    runner: asyncio.Task[None] | None = None
    acked: int = 0
    sent: int = 0
    announced: bool = False
    # The result is in the journal (it may be sent).
    result_ready: bool = False
    result_sent: bool = False
    stop_requested: str = ""  # "", "stop" or "timeout"
    forget_when_done: bool = False
    # Event-loop time of the dispatch (for the acceptance hold).
    accepted_at: float = 0.0
    # The journal could not take the task's output.
    spool_error: BaseException | None = None

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
        self._io = ThreadPoolExecutor(1, thread_name_prefix="spool-io")
        self.spool = Spool(config.state_dir, self._io)
        self.credentials = self.spool.credentials()
        # Several servers (comma-separated): the first, then each reconnect tries the next.
        self._servers = [a.strip() for a in config.server.split(",") if a.strip()]
        self._server_index = 0
        self.tasks: dict[str, HeldTask] = {}
        self._changed = asyncio.Event()
        # The protocol of the current stream (the welcome says).
        self.protocol = 1
        # Event-loop time of the last message sent (heartbeats only fill silences).
        self._last_sent = 0.0
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
        for spooled in await self.spool.load():
            meta = spooled.meta
            if meta.result is None:
                if meta.pid is not None and await self._disk(
                    kill_leftover, meta.pid, meta.proc_start
                ):
                    log.warning(
                        "killed process group %d left from a task", meta.pid, extra=_ids(meta)
                    )
                meta.produced = max(meta.produced, spooled.size)
                meta.result = TaskResult(
                    "error",
                    now_ms(),
                    error_code="ClientRestarted",
                    error_info="the agent restarted while the script was running",
                )
                self.spool.append(Result(snapshot(meta)))
            self.tasks[meta.task_id] = HeldTask(spooled, result_ready=True)
        # No task runs now: every script left in the scripts directory is a leftover.
        await self._disk(
            _clear_scripts, self.spool.scripts_dir, [h.meta for h in self.tasks.values()]
        )
        await self.spool.flush()
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
                    finished=held.result_ready,
                )
                for task_id, held in self.tasks.items()
            ],
            protocol_version=PROTOCOL,
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
            self.protocol = max(1, min(PROTOCOL, first.welcome.protocol_version))
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
                self._forget_or_mark(held)
        self._changed.set()

    def _forget_or_mark(self, held: HeldTask) -> None:
        if held.result_ready:
            self.spool.forget(held.meta.task_id)
            self.tasks.pop(held.meta.task_id, None)
        else:
            held.forget_when_done = True

    async def _writer(
        self,
        call: aio.StreamStreamCall[pb.ConnectRequest, pb.ConnectResponse],
        outbox: asyncio.Queue[pb.ConnectRequest],
    ) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                message = await outbox.get()
                self._last_sent = loop.time()
                await call.write(message)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("sending to the server failed: %s", _brief(exc))
            call.cancel()

    async def _heartbeats(self, outbox: asyncio.Queue[pb.ConnectRequest], interval: int) -> None:
        """A heartbeat whenever nothing else has gone out for `interval` seconds."""
        loop = asyncio.get_running_loop()
        self._last_sent = loop.time()
        while True:
            quiet_until = self._last_sent + interval
            if loop.time() < quiet_until:
                await asyncio.sleep(quiet_until - loop.time())
                continue
            beat = pb.Heartbeat()
            beat.time.FromMilliseconds(now_ms())
            self._last_sent = loop.time()
            await outbox.put(pb.ConnectRequest(heartbeat=beat))

    # Server messages --------------------------------------------------------------------

    async def _handle(self, message: pb.ConnectResponse) -> None:
        kind = message.WhichOneof("message")
        if kind == "orders":
            orders = message.orders
            for dispatch in orders.dispatches:
                self._dispatch(dispatch)
            for cancel in orders.cancels:
                self._cancel(cancel)
            for ack in orders.acks:
                self._ack(ack)
        elif kind == "dispatch":
            self._dispatch(message.dispatch)
        elif kind == "cancel":
            self._cancel(message.cancel)
        elif kind == "ack":
            self._ack(message.ack)
        elif kind == "heartbeat":
            pass
        else:
            log.warning("unexpected %s message from the server", kind)

    def _dispatch(self, dispatch: pb.Dispatch) -> None:
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
        # Written by the task's first step, in one trip to the I/O thread with its script.
        self.spool.append(Accept(snapshot(meta)))
        held = HeldTask(SpooledTask(meta), accepted_at=asyncio.get_running_loop().time())
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
                    dispatch.instance_id,
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

    def _ack(self, ack: pb.Ack) -> None:
        held = self.tasks.get(ack.task_id)
        if held is None:
            return
        if ack.offset > held.acked:
            held.acked = ack.offset
            held.spooled.release(held.acked)
            self.spool.release(ack.task_id, held.acked)
        if ack.rewind:
            held.sent = ack.offset
            held.result_sent = False
        if ack.result_stored:
            self._forget_or_mark(held)
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
        if held.spool_error is not None and result.kind != "error":
            result = TaskResult(
                "error",
                now_ms(),
                error_code="ExecutionException",
                error_info=f"the agent could not keep the output: {held.spool_error}"[:1000],
            )
        meta.result = result
        meta.produced = max(meta.produced, held.spooled.appended)
        self.spool.append(Result(snapshot(meta)))
        try:
            # After the result is written: the script is not needed any more.
            await self.spool.call(partial(remove_script, meta.script_path))
        except Exception:
            log.exception("storing the task's result failed", extra=_ids(meta))
        held.result_ready = True
        log.info("task ended: %s, exit code %s", result.kind, result.exit_code, extra=_ids(meta))
        if held.forget_when_done:
            self._forget_or_mark(held)
        self._changed.set()

    async def _execute(self, held: HeldTask, script: Script) -> TaskResult:
        meta = held.meta
        spool = self.spool
        if script.instance_id and script.instance_id != self.instance_id:
            # Whatever went wrong upstream, a script never runs on a machine it was not
            # meant for: refused before anything is written, and reported as data.
            log.error(
                "refused a task addressed to instance %s (this is %s)",
                script.instance_id,
                self.instance_id,
                extra=_ids(meta),
            )
            return TaskResult(
                "error",
                now_ms(),
                error_code=INSTANCE_MISMATCH,
                error_info=f"the task is for instance {script.instance_id}, "
                f"not this one ({self.instance_id})",
            )
        if held.stop_requested:
            return TaskResult(
                "timed_out" if held.stop_requested == "timeout" else "stopped", now_ms()
            )
        if script.file is not None:
            meta.started = True
            meta.start_ms = now_ms()
            await spool.call(partial(write_file, script.file, script.content))
            return TaskResult("finished", now_ms(), exit_code=0)
        builtins = {"CLOUDASSIST_TASK_ID": meta.task_id, "CLOUDASSIST_INVOKE_ID": meta.invoke_id}
        plan = await spool.call(
            partial(
                plan_launch,
                meta.command_type,
                script.content,
                meta.working_dir,
                meta.username,
                {**script.env, **builtins},
                script.launcher,
                script.powershell,
                scripts_dir=spool.scripts_dir,
                name=script_name(meta.task_id, meta.command_type),
            )
        )
        meta.script_path = plan.script_path
        process = TaskProcess(plan, meta.timeout_seconds, self.config.kill_grace_seconds)
        held.process = process
        if held.stop_requested:
            process.request_stop(timeout=held.stop_requested == "timeout")

        def started(pid: int) -> None:
            meta.started = True
            meta.pid = pid
            meta.start_ms = now_ms()
            spool.append(Start(meta.task_id, pid, meta.start_ms))

        def output(data: bytes) -> asyncio.Future[None] | None:
            meta.produced += len(data)
            spooled = held.spooled
            room = meta.output_limit - spooled.appended
            if room <= 0 or held.spool_error is not None:
                return None
            kept = data[:room]
            # Lingers like the uploader does: a quick task's output and result are one write.
            written = spool.append(
                Output(meta.task_id, spooled.appended, kept), linger=OUTPUT_LINGER_SECONDS
            )
            spooled.appended += len(kept)
            spool.note_output(len(kept))
            written.add_done_callback(partial(self._output_written, held, kept))
            # Backpressure: the pipe waits while the journal is behind.
            return written if spool.output_backlog() > MAX_UNWRITTEN else None

        outcome = await process.run(started, output)
        return TaskResult(outcome.kind, now_ms(), exit_code=outcome.exit_code)

    def _output_written(self, held: HeldTask, data: bytes, written: asyncio.Future[None]) -> None:
        """Output on disk may be sent (callbacks run in the order the output came)."""
        error = written.exception() if not written.cancelled() else asyncio.CancelledError()
        if error is not None:
            if held.spool_error is None:
                log.error("the journal could not take output: %s", error, extra=_ids(held.meta))
            held.spool_error = error
        if held.spool_error is None:
            held.spooled.remember(data, WINDOW)
            self._changed.set()

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
                self.spool.append(Result(snapshot(held.meta)))
        await self.spool.close()
        self._io.shutdown(wait=True)

    # Uploading --------------------------------------------------------------------------

    async def _uploader(self, outbox: asyncio.Queue[pb.ConnectRequest]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._changed.clear()
            if not self._results_to_send() and self._output_to_send():
                # Only output of running tasks: let more of it gather, but no longer than a
                # result takes to come (a quick task's output goes with it).
                await self._linger(loop.time() + OUTPUT_LINGER_SECONDS)
            now = loop.time()
            wake_at: float | None = None
            reports: list[pb.TaskReport] = []
            budget = REPORT_BYTES
            for held in list(self.tasks.values()):
                if budget <= 0:
                    break
                if not held.announced and not held.result_ready:
                    hold_until = held.accepted_at + ACCEPT_HOLD_SECONDS
                    if now < hold_until:
                        wake_at = hold_until if wake_at is None else min(wake_at, hold_until)
                        continue
                report = await self._report(held, now, budget)
                if report is not None:
                    reports.append(report)
                    budget -= len(report.data)
            if reports:
                for message in _messages(reports, self.protocol):
                    await outbox.put(message)
                continue  # more may be ready (past the budget, or in the window)
            timeout = None if wake_at is None else max(0.0, wake_at - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)

    def _results_to_send(self) -> bool:
        return any(h.result_ready and not h.result_sent for h in self.tasks.values())

    def _output_to_send(self) -> bool:
        return any(h.sent < h.spooled.size for h in self.tasks.values())

    async def _linger(self, until: float) -> None:
        """Waits until `until`, or until a task has a result to send."""
        loop = asyncio.get_running_loop()
        while (left := until - loop.time()) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
            if self._results_to_send():
                return

    async def _report(self, held: HeldTask, now: float, budget: int) -> pb.TaskReport | None:
        """What is new about a task: its acceptance, output, result; None: nothing."""
        meta = held.meta
        spooled = held.spooled
        result = meta.result if held.result_ready else None
        report = pb.TaskReport(task_id=meta.task_id)
        news = False
        if not held.announced:
            held.announced = True
            news = True
            # A task refused before it started reports only its error.
            if not (result is not None and result.kind == "error" and not meta.started):
                report.accepted_time.FromMilliseconds(meta.accepted_ms)
                report.accept_held_ms = max(0, int((now - held.accepted_at) * 1000))
        in_flight = held.sent - held.acked
        if held.sent < spooled.size and in_flight < WINDOW:
            length = min(CHUNK, spooled.size - held.sent, WINDOW - in_flight, max(budget, 1))
            data = spooled.cached(held.sent, length)
            if data is None:  # older than what memory keeps (a resume): read the journal
                data = await self.spool.read(meta.task_id, held.sent, length)
            if data:
                report.offset = held.sent
                report.data = data
                held.sent += len(data)
                news = True
        if result is not None and not held.result_sent and held.sent >= spooled.size:
            held.result_sent = True
            news = True
            _set_result(report, meta, result)
        return report if news else None


def _messages(reports: list[pb.TaskReport], protocol: int) -> list[pb.ConnectRequest]:
    """Protocol 2: one `reports` message; protocol 1: the old messages, one per event."""
    if protocol >= 2:
        return [pb.ConnectRequest(reports=pb.Reports(tasks=reports))]
    messages: list[pb.ConnectRequest] = []
    for report in reports:
        task_id = report.task_id
        if report.HasField("accepted_time"):
            messages.append(
                pb.ConnectRequest(
                    task_accepted=pb.TaskAccepted(task_id=task_id, start_time=report.accepted_time)
                )
            )
        if report.data:
            messages.append(
                pb.ConnectRequest(
                    output=pb.TaskOutput(task_id=task_id, offset=report.offset, data=report.data)
                )
            )
        kind = report.WhichOneof("result")
        if kind == "finished":
            messages.append(pb.ConnectRequest(task_finished=report.finished))
        elif kind == "stopped":
            messages.append(pb.ConnectRequest(task_stopped=report.stopped))
        elif kind == "error":
            messages.append(pb.ConnectRequest(task_error=report.error))
    return messages


def _set_result(report: pb.TaskReport, meta: TaskMeta, result: TaskResult) -> None:
    task_id = meta.task_id
    if result.kind == "finished":
        report.finished.CopyFrom(
            pb.TaskFinished(
                task_id=task_id,
                exit_code=result.exit_code or 0,
                output_size=meta.produced,
                start_time=_ts(meta.start_ms),
                finish_time=_ts(result.time_ms),
            )
        )
    elif result.kind in ("stopped", "timed_out"):
        timed_out = result.kind == "timed_out"
        report.stopped.CopyFrom(
            pb.TaskStopped(
                task_id=task_id,
                reason=pb.STOP_REASON_TIMEOUT if timed_out else pb.STOP_REASON_STOP,
                started=meta.started,
                exit_code=result.exit_code or 0,
                output_size=meta.produced,
                stop_time=_ts(result.time_ms),
            )
        )
    else:
        report.error.CopyFrom(
            pb.TaskError(
                task_id=task_id,
                error_code=result.error_code,
                error_info=result.error_info,
                output_size=meta.produced,
            )
        )


def _clear_scripts(scripts_dir: Path, metas: list[TaskMeta]) -> None:
    """Removes every script left from before (none runs now), and the private directories of
    tasks' scripts that ran as another user."""
    for meta in metas:
        remove_script(meta.script_path)
    for entry in os.scandir(scripts_dir):
        with contextlib.suppress(OSError):
            os.unlink(entry.path)


def _file_to_write(dispatch: pb.Dispatch) -> FileToWrite | None:
    if not dispatch.HasField("file"):
        return None
    f = dispatch.file
    return FileToWrite(f.name, f.target_dir, f.mode, f.owner, f.group, f.overwrite)


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
