"""The agent's uploader resuming a task's output on a new stream, against a real spool: what it
sends must start where the server's acknowledgements say and carry each byte at its offset."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudassist.agent import wire
from cloudassist.agent.config import AgentConfig
from cloudassist.agent.journal import Journal
from cloudassist.agent.records import Accept, Output, Release, snapshot
from cloudassist.agent.spool import Spool, SpooledTask, TaskMeta
from cloudassist.agent.tasks import HeldTask, TaskMap
from cloudassist.agent.uploader import Uploader
from cloudassist.v1 import agent_pb2 as pb

KIB = 1024
PIECE = 256 * KIB
TASK = "r-1"


def _meta() -> TaskMeta:
    return TaskMeta(
        task_id=TASK,
        invoke_id="t-1",
        command_type="RUN_SHELL_SCRIPT",
        timeout_seconds=60,
        working_dir="",
        username="",
        output_limit=64 << 20,
        accepted_ms=0,
    )


@pytest.fixture
async def io() -> AsyncIterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown(wait=True)


async def _running_task(root: Path, io: ThreadPoolExecutor, output: bytes) -> tuple[Spool, TaskMap]:
    """A spool and task map holding one running task whose output is all in the journal."""
    spool = Spool(root, io)
    await spool.load()
    meta = _meta()
    await spool.append(Accept(snapshot(meta)))
    spooled = SpooledTask(meta)
    for offset in range(0, len(output), PIECE):
        piece = output[offset : offset + PIECE]
        await spool.append(Output(TASK, offset, piece))
        spooled.remember(piece, wire.WINDOW)
    tasks = TaskMap(AgentConfig(state_dir=root), spool, io, "", lambda: "i-1")
    tasks.tasks[TASK] = HeldTask(spooled, announced=True)
    return spool, tasks


async def _sent_until(outbox: asyncio.Queue[pb.ConnectRequest], end: int) -> list[pb.TaskReport]:
    """The output reports the uploader puts in the outbox until one reaches `end`."""
    reports: list[pb.TaskReport] = []
    while True:
        message = await outbox.get()
        for report in message.reports.tasks:
            if report.data:
                reports.append(report)
                if report.offset + len(report.data) >= end:
                    return reports


async def _upload(tasks: TaskMap, spool: Spool, output: bytes, stalled: str) -> list[pb.TaskReport]:
    """Runs an uploader until it has sent the end of `output`; each report is at its offset."""
    outbox: asyncio.Queue[pb.ConnectRequest] = asyncio.Queue()
    uploader = asyncio.create_task(Uploader(tasks, spool).run(outbox, protocol=2))
    try:
        reports = await asyncio.wait_for(_sent_until(outbox, len(output)), timeout=10)
    except TimeoutError:
        pytest.fail(f"the uploader stalled {stalled}")
    finally:
        uploader.cancel()
        await asyncio.gather(uploader, return_exceptions=True)
    for report in reports:
        start = report.offset
        assert report.data == output[start : start + len(report.data)], f"bytes at {start}"
    return reports


async def test_output_acknowledged_past_what_this_stream_sent_is_not_sent_again(
    tmp_path: Path, io: ThreadPoolExecutor
) -> None:
    # The server read 256 KiB as stored when it welcomed this stream; then reports of the
    # stream before it, still on their way, were stored and acknowledged up to 768 KiB here.
    output = os.urandom(4 * PIECE)
    spool, tasks = await _running_task(tmp_path, io, output)
    tasks.welcomed({TASK: wire.Ack(TASK, PIECE)})
    tasks.apply(wire.Ack(TASK, 3 * PIECE))
    await spool.flush()  # the journal has let go of what the server holds
    reports = await _upload(tasks, spool, output, "after 768 KiB")
    assert reports[0].offset == 3 * PIECE, "output the server has is not sent again"
    assert [r.offset for r in reports] == sorted(r.offset for r in reports)
    assert reports[-1].offset + len(reports[-1].data) == len(output)


async def test_output_acknowledged_while_a_read_from_the_journal_is_under_way(
    tmp_path: Path, io: ThreadPoolExecutor
) -> None:
    # The uploader reads old output from the journal (memory no longer holds it); while that
    # read is on the I/O thread, an acknowledgement from reports of the stream before this one
    # says the server holds more than this stream has sent.
    output = os.urandom(4 * PIECE)
    spool, tasks = await _running_task(tmp_path, io, output)
    tasks.tasks[TASK].spooled.release(len(output))  # every read goes to the journal
    tasks.welcomed({TASK: wire.Ack(TASK, 0)})
    real_read = spool.read
    acked_during_read: list[int] = []

    async def read_then_ack(task_id: str, offset: int, length: int) -> bytes:
        data = await real_read(task_id, offset, length)
        if not acked_during_read:
            acked_during_read.append(offset + PIECE // 2)
            tasks.apply(wire.Ack(TASK, offset + PIECE // 2))
        return data

    spool.read = read_then_ack  # type: ignore[method-assign]
    reports = await _upload(tasks, spool, output, "after an acknowledgement during a read")
    assert acked_during_read
    covered = acked_during_read[0]
    for report in reports:
        assert report.offset <= covered, f"a gap before {report.offset}"
        covered = max(covered, report.offset + len(report.data))
    assert covered == len(output)


def test_the_journal_never_serves_bytes_from_after_a_gap_as_if_they_were_earlier(
    tmp_path: Path,
) -> None:
    journal = Journal(tmp_path)
    journal.open()
    output = os.urandom(3 * PIECE)
    journal.write(
        [
            Accept(snapshot(_meta())),
            *(Output(TASK, o, output[o : o + PIECE]) for o in range(0, len(output), PIECE)),
        ]
    )
    assert journal.read(TASK, PIECE - 5, 10) == output[PIECE - 5 : PIECE + 5], "across pieces"
    journal.write([Release(TASK, 2 * PIECE)])
    assert journal.read(TASK, PIECE, PIECE) == b"", "released: nothing to serve"
    assert journal.read(TASK, PIECE + 10, 2 * PIECE) == b"", "not from a later offset"
    assert journal.read(TASK, 2 * PIECE + 5, 10) == output[2 * PIECE + 5 : 2 * PIECE + 15]
    journal.close()
