"""Every task the agent holds, by id: taking it on, running it, cancelling it, forgetting it.

A task stays here from its dispatch until the server has stored its result (or, after a
restart, from the journal). `TaskMap` keeps the books; `TaskRunner` runs one task's script
through the executor (or writes its file) and journals its start, output and result.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ParamSpec, TypeVar

from cloudassist.agent import wire
from cloudassist.agent.config import AgentConfig
from cloudassist.agent.executor import (
    LaunchError,
    TaskProcess,
    kill_leftover,
    plan_launch,
    remove_script,
    script_name,
)
from cloudassist.agent.files import write_file
from cloudassist.agent.records import Accept, Output, Result, Start, snapshot
from cloudassist.agent.spool import MAX_UNWRITTEN, Spool, SpooledTask, TaskMeta, TaskResult
from cloudassist.common.clock import now_ms
from cloudassist.common.logs import about
from cloudassist.common.task_errors import CLIENT_RESTARTED, EXECUTION_EXCEPTION, INSTANCE_MISMATCH

# Output of running tasks gathers this long before it is sent, so a script that prints line
# by line does not cost a message a line.
OUTPUT_LINGER_SECONDS = 0.005

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def _ids(meta: TaskMeta) -> dict[str, object]:
    """The `extra` of a log line about a task: the server's record and invocation ids."""
    return about(record_id=meta.task_id, invoke_id=meta.invoke_id)


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


class TaskMap:
    """Task id -> held task. `changed` is set whenever a task has something new to send."""

    def __init__(
        self,
        config: AgentConfig,
        spool: Spool,
        io: Executor,
        powershell: str,
        instance_id: Callable[[], str],
    ) -> None:
        self.tasks: dict[str, HeldTask] = {}
        self.changed = asyncio.Event()
        self._config = config
        self._spool = spool
        self._io = io
        self._runner = TaskRunner(spool, config.kill_grace_seconds, powershell, instance_id)

    async def _disk(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._io, lambda: fn(*args, **kwargs))

    async def recover(self) -> None:
        """Loads the spool; tasks that were running when the agent stopped are killed and
        reported as ClientRestarted, with the output they had produced."""
        for spooled in await self._spool.load():
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
                    error_code=CLIENT_RESTARTED,
                    error_info="the agent restarted while the script was running",
                )
                self._spool.append(Result(snapshot(meta)))
            self.tasks[meta.task_id] = HeldTask(spooled, result_ready=True)
        # No task runs now: every script left in the scripts directory is a leftover.
        await self._disk(
            _clear_scripts, self._spool.scripts_dir, [h.meta for h in self.tasks.values()]
        )
        await self._spool.flush()
        if self.tasks:
            log.info("resuming %d tasks from %s", len(self.tasks), self._config.state_dir)

    # The stream ------------------------------------------------------------------------

    def progress(self) -> list[wire.Progress]:
        """What the hello says about every task held."""
        return [
            wire.Progress(task_id, held.spooled.size, held.result_ready)
            for task_id, held in self.tasks.items()
        ]

    def welcomed(self, acks: dict[str, wire.Ack]) -> None:
        """A new connection: each task resumes from what the server has stored."""
        for task_id, held in list(self.tasks.items()):
            ack = acks.get(task_id)
            held.acked = held.sent = ack.offset if ack else 0
            held.announced = True  # the hello told the server about it
            held.result_sent = False
            if ack and ack.result_stored:
                self._forget_or_mark(held)
        self.changed.set()

    def apply(self, order: wire.Order) -> None:
        if isinstance(order, wire.Dispatched):
            self._dispatch(order)
        elif isinstance(order, wire.Cancel):
            self._cancel(order)
        else:
            self._ack(order)

    def _forget_or_mark(self, held: HeldTask) -> None:
        if held.result_ready:
            self._spool.forget(held.meta.task_id)
            self.tasks.pop(held.meta.task_id, None)
        else:
            held.forget_when_done = True

    def _dispatch(self, dispatched: wire.Dispatched) -> None:
        meta = dispatched.meta
        task_id = meta.task_id
        if task_id in self.tasks or not task_id or self._spool.knows(task_id):
            log.info("task dispatched again; it runs only once", extra=_ids(meta))
            return
        log.info("task accepted", extra=_ids(meta))
        # Written by the task's first step, in one trip to the I/O thread with its script.
        self._spool.append(Accept(snapshot(meta)))
        held = HeldTask(SpooledTask(meta), accepted_at=asyncio.get_running_loop().time())
        self.tasks[task_id] = held
        held.runner = asyncio.create_task(self._run(held, dispatched.script))
        self.changed.set()

    def _cancel(self, cancel: wire.Cancel) -> None:
        held = self.tasks.get(cancel.task_id)
        if held is None or held.meta.result is not None:
            return
        held.stop_requested = "timeout" if cancel.timeout else "stop"
        if held.process is not None:
            held.process.request_stop(timeout=cancel.timeout)

    def _ack(self, ack: wire.Ack) -> None:
        held = self.tasks.get(ack.task_id)
        if held is None:
            return
        if ack.offset > held.acked:
            held.acked = ack.offset
            held.spooled.release(held.acked)
            self._spool.release(ack.task_id, held.acked)
            # Reports of the stream before this one, stored after this stream's hello, can
            # acknowledge more than this stream has sent: that output need not go again (and
            # the journal lets go of it).
            held.sent = max(held.sent, held.acked)
        if ack.rewind:
            held.sent = ack.offset
            held.result_sent = False
        if ack.result_stored:
            self._forget_or_mark(held)
        self.changed.set()

    # Running ---------------------------------------------------------------------------

    async def _run(self, held: HeldTask, script: wire.Script) -> None:
        meta = held.meta
        try:
            result = await self._runner.execute(held, script, self.changed)
        except asyncio.CancelledError:
            raise
        except LaunchError as error:
            result = TaskResult("error", now_ms(), error_code=error.code, error_info=error.info)
        except Exception as exc:
            log.exception("task failed to run", extra=_ids(meta))
            result = TaskResult(
                "error", now_ms(), error_code=EXECUTION_EXCEPTION, error_info=str(exc)[:1000]
            )
        if held.spool_error is not None and result.kind != "error":
            result = TaskResult(
                "error",
                now_ms(),
                error_code=EXECUTION_EXCEPTION,
                error_info=f"the agent could not keep the output: {held.spool_error}"[:1000],
            )
        meta.result = result
        meta.produced = max(meta.produced, held.spooled.appended)
        self._spool.append(Result(snapshot(meta)))
        try:
            # After the result is written: the script is not needed any more.
            await self._spool.call(partial(remove_script, meta.script_path))
        except Exception:
            log.exception("storing the task's result failed", extra=_ids(meta))
        held.result_ready = True
        log.info("task ended: %s, exit code %s", result.kind, result.exit_code, extra=_ids(meta))
        if held.forget_when_done:
            self._forget_or_mark(held)
        self.changed.set()

    async def shutdown(self) -> None:
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
                    error_code=CLIENT_RESTARTED,
                    error_info="the agent stopped while the script was running",
                )
                self._spool.append(Result(snapshot(held.meta)))


class TaskRunner:
    """Runs one task: refuses it if it is for another instance, else writes its file or runs
    its script, journalling the start and the output as they come."""

    def __init__(
        self,
        spool: Spool,
        kill_grace_seconds: float,
        powershell: str,
        instance_id: Callable[[], str],
    ) -> None:
        self._spool = spool
        self._kill_grace_seconds = kill_grace_seconds
        self._powershell = powershell  # the agent's pwsh, when it runs PowerShell
        self._instance_id = instance_id

    async def execute(
        self, held: HeldTask, script: wire.Script, changed: asyncio.Event
    ) -> TaskResult:
        meta = held.meta
        spool = self._spool
        instance_id = self._instance_id()
        if script.instance_id and script.instance_id != instance_id:
            # Whatever went wrong upstream, a script never runs on a machine it was not
            # meant for: refused before anything is written, and reported as data.
            log.error(
                "refused a task addressed to instance %s (this is %s)",
                script.instance_id,
                instance_id,
                extra=_ids(meta),
            )
            return TaskResult(
                "error",
                now_ms(),
                error_code=INSTANCE_MISMATCH,
                error_info=f"the task is for instance {script.instance_id}, "
                f"not this one ({instance_id})",
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
                self._powershell,
                scripts_dir=spool.scripts_dir,
                name=script_name(meta.task_id, meta.command_type),
            )
        )
        meta.script_path = plan.script_path
        process = TaskProcess(plan, meta.timeout_seconds, self._kill_grace_seconds)
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
            written.add_done_callback(partial(_output_written, held, kept, changed))
            # Backpressure: the pipe waits while the journal is behind.
            return written if spool.output_backlog() > MAX_UNWRITTEN else None

        outcome = await process.run(started, output)
        return TaskResult(outcome.kind, now_ms(), exit_code=outcome.exit_code)


def _output_written(
    held: HeldTask, data: bytes, changed: asyncio.Event, written: asyncio.Future[None]
) -> None:
    """Output on disk may be sent (callbacks run in the order the output came)."""
    error = written.exception() if not written.cancelled() else asyncio.CancelledError()
    if error is not None:
        if held.spool_error is None:
            log.error("the journal could not take output: %s", error, extra=_ids(held.meta))
        held.spool_error = error
    if held.spool_error is None:
        held.spooled.remember(data, wire.WINDOW)
        changed.set()


def _clear_scripts(scripts_dir: Path, metas: list[TaskMeta]) -> None:
    """Removes every script left from before (none runs now), and the private directories of
    tasks' scripts that ran as another user."""
    for meta in metas:
        remove_script(meta.script_path)
    for entry in os.scandir(scripts_dir):
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
