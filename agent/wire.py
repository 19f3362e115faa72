"""The agent stream's messages <-> the agent's terms, for both protocols.

Protocol 1 has one message per event; protocol 2 packs what is ready into one message each
way (`orders` down, `reports` up). The server's counterpart is its agent wire module; the
agent shares only the generated messages with it. Pure functions: no stream, no spool.
"""

from __future__ import annotations

import logging
import platform
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from google.protobuf.timestamp_pb2 import Timestamp

from cloudassist.agent import __version__
from cloudassist.agent.files import FileToWrite
from cloudassist.agent.spool import Credentials, TaskMeta, TaskResult
from cloudassist.common.clock import now_ms
from cloudassist.v1 import agent_pb2 as pb
from cloudassist.v1 import command_pb2, instance_pb2, tag_pb2

log = logging.getLogger(__name__)

# The newest protocol this agent speaks.
PROTOCOL = 2
# Unacknowledged output per task on the wire; the server acknowledges after each commit.
WINDOW = 4 * 1024 * 1024


def os_type() -> instance_pb2.OsType.ValueType:
    if platform.system() == "Windows":
        return instance_pb2.OS_TYPE_WINDOWS
    return instance_pb2.OS_TYPE_LINUX


def _ts(ms: int | None) -> Timestamp | None:
    if ms is None:
        return None
    ts = Timestamp()
    ts.FromMilliseconds(ms)
    return ts


# Agent to server ---------------------------------------------------------------------------


class Progress(NamedTuple):
    """What the hello says about a task the agent holds."""

    task_id: str
    output_size: int
    finished: bool


def hello(
    credentials: Credentials,
    tags: dict[str, str],
    boot_id: str,
    powershell: bool,
    tasks: Iterable[Progress],
) -> pb.Hello:
    return pb.Hello(
        instance_id=credentials.instance_id,
        instance_secret=credentials.instance_secret,
        region_id=credentials.region_id,
        os_type=os_type(),
        hostname=socket.gethostname(),
        agent_version=__version__,
        tags=[tag_pb2.Tag(key=k, value=v) for k, v in sorted(tags.items())],
        boot_id=boot_id,
        extra_command_types=[command_pb2.COMMAND_TYPE_RUN_POWERSHELL_SCRIPT] if powershell else [],
        tasks=[
            pb.TaskProgress(task_id=t.task_id, output_size=t.output_size, finished=t.finished)
            for t in tasks
        ],
        protocol_version=PROTOCOL,
    )


def heartbeat() -> pb.ConnectRequest:
    beat = pb.Heartbeat()
    beat.time.FromMilliseconds(now_ms())
    return pb.ConnectRequest(heartbeat=beat)


def task_report(
    task_id: str,
    *,
    accepted_ms: int | None = None,
    accept_held_ms: int = 0,
    offset: int = 0,
    data: bytes = b"",
    ended: TaskMeta | None = None,
) -> pb.TaskReport:
    """What is new about a task: its acceptance, output at `offset`, its result (`ended`'s)."""
    report = pb.TaskReport(task_id=task_id)
    if accepted_ms is not None:
        report.accepted_time.FromMilliseconds(accepted_ms)
        report.accept_held_ms = accept_held_ms
    if data:
        report.offset = offset
        report.data = data
    if ended is not None and ended.result is not None:
        _set_result(report, ended, ended.result)
    return report


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


def messages(reports: list[pb.TaskReport], protocol: int) -> list[pb.ConnectRequest]:
    """Protocol 2: one `reports` message; protocol 1: the old messages, one per event."""
    if protocol >= 2:
        return [pb.ConnectRequest(reports=pb.Reports(tasks=reports))]
    out: list[pb.ConnectRequest] = []
    for report in reports:
        task_id = report.task_id
        if report.HasField("accepted_time"):
            out.append(
                pb.ConnectRequest(
                    task_accepted=pb.TaskAccepted(task_id=task_id, start_time=report.accepted_time)
                )
            )
        if report.data:
            out.append(
                pb.ConnectRequest(
                    output=pb.TaskOutput(task_id=task_id, offset=report.offset, data=report.data)
                )
            )
        kind = report.WhichOneof("result")
        if kind == "finished":
            out.append(pb.ConnectRequest(task_finished=report.finished))
        elif kind == "stopped":
            out.append(pb.ConnectRequest(task_stopped=report.stopped))
        elif kind == "error":
            out.append(pb.ConnectRequest(task_error=report.error))
    return out


# Server to agent ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Script:
    """What a dispatch says to run, as it arrived (it is not kept in the spool)."""

    content: bytes
    env: dict[str, str]
    launcher: str = ""
    file: FileToWrite | None = None  # SendFile: write the content here instead of running it
    instance_id: str = ""  # the instance the server addressed it to (empty: an older server)


@dataclass(frozen=True)
class Dispatched:
    """A task to take on: its metadata (accepted now) and what to run."""

    meta: TaskMeta
    script: Script


@dataclass(frozen=True)
class Cancel:
    task_id: str
    timeout: bool  # the invocation's timeout passed (else: stopped)


@dataclass(frozen=True)
class Ack:
    task_id: str
    offset: int  # the server stored the task's output up to here
    result_stored: bool = False  # and its result: the agent may forget the task
    rewind: bool = False  # it is missing output before the result: re-send from `offset`


Order = Dispatched | Cancel | Ack


@dataclass(frozen=True)
class Welcome:
    protocol: int  # of this stream
    heartbeat_interval: int  # seconds of silence before a heartbeat
    acks: dict[str, Ack]  # by task id: how far the server got with the tasks of the hello


def welcome_in(message: object) -> Welcome | None:
    """The welcome that answers a hello; None: the server did not answer with one."""
    if not isinstance(message, pb.ConnectResponse) or not message.HasField("welcome"):
        return None
    welcome = message.welcome
    return Welcome(
        protocol=max(1, min(PROTOCOL, welcome.protocol_version)),
        heartbeat_interval=max(1, welcome.heartbeat_interval_seconds),
        acks={a.task_id: Ack(a.task_id, a.offset, a.result_stored) for a in welcome.acks},
    )


def orders_in(message: pb.ConnectResponse, kind: str | None) -> Iterator[Order]:
    """The orders in a message (`kind`: its field), in the order they are to be carried out.

    Lazily: a dispatch is accepted (and its time taken) when it is reached."""
    if kind == "orders":
        orders = message.orders
        for dispatch in orders.dispatches:
            yield _dispatched(dispatch)
        for cancel in orders.cancels:
            yield _cancel(cancel)
        for ack in orders.acks:
            yield _ack(ack)
    elif kind == "dispatch":
        yield _dispatched(message.dispatch)
    elif kind == "cancel":
        yield _cancel(message.cancel)
    elif kind == "ack":
        yield _ack(message.ack)
    elif kind == "heartbeat":
        pass
    else:
        log.warning("unexpected %s message from the server", kind)


def _dispatched(dispatch: pb.Dispatch) -> Dispatched:
    meta = TaskMeta(
        task_id=dispatch.task_id,
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
    script = Script(
        dispatch.script,
        dict(dispatch.env),
        dispatch.launcher,
        _file_to_write(dispatch),
        dispatch.instance_id,
    )
    return Dispatched(meta, script)


def _file_to_write(dispatch: pb.Dispatch) -> FileToWrite | None:
    if not dispatch.HasField("file"):
        return None
    f = dispatch.file
    return FileToWrite(f.name, f.target_dir, f.mode, f.owner, f.group, f.overwrite)


def _cancel(cancel: pb.Cancel) -> Cancel:
    return Cancel(cancel.task_id, timeout=cancel.reason == pb.STOP_REASON_TIMEOUT)


def _ack(ack: pb.Ack) -> Ack:
    return Ack(ack.task_id, ack.offset, result_stored=ack.result_stored, rewind=ack.rewind)
