"""The agent's spool: the journal on disk (what survives a restart of the agent, a torn
write, compaction, the spool of an older version) and the newest output in memory."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cloudassist.agent import journal
from cloudassist.agent.journal import Journal
from cloudassist.agent.records import (
    Accept,
    Forget,
    Output,
    Release,
    Result,
    Start,
    snapshot,
)
from cloudassist.agent.spool import Spool, SpooledTask, TaskMeta, TaskResult


def _meta(task_id: str = "r-1") -> TaskMeta:
    return TaskMeta(
        task_id=task_id,
        invoke_id="t-1",
        command_type="RUN_SHELL_SCRIPT",
        timeout_seconds=60,
        working_dir="",
        username="",
        output_limit=1 << 20,
        accepted_ms=0,
    )


def _journal(root: Path) -> Journal:
    opened = Journal(root)
    opened.open()
    return opened


@pytest.fixture
async def io() -> AsyncIterator[ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(1)
    yield executor
    executor.shutdown(wait=True)


def count_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the journal's writes from now on."""
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(len(data))
        return real_write(fd, data)

    monkeypatch.setattr(journal.os, "write", counting_write)
    return writes


async def _spool_holding_a_task(root: Path, io: ThreadPoolExecutor) -> Spool:
    """A loaded spool whose journal holds task r-1 (accepted)."""
    spool = Spool(root, io)
    await spool.load()
    await spool.append(Accept(snapshot(_meta())))
    return spool


# In memory -------------------------------------------------------------------------------


def test_new_output_is_served_from_memory() -> None:
    task = SpooledTask(_meta())
    task.remember(b"hello ", keep=1024)
    task.remember(b"world", keep=1024)
    assert task.size == 11
    assert task.cached(0, 100) == b"hello world"
    assert task.cached(6, 3) == b"wor"


def test_memory_keeps_only_the_newest_bytes() -> None:
    task = SpooledTask(_meta())
    task.remember(b"0123456789", keep=4)
    assert task.cached(6, 4) == b"6789"
    assert task.cached(5, 4) is None, "older than memory: the caller reads the journal"


def test_acknowledged_output_leaves_memory() -> None:
    task = SpooledTask(_meta())
    task.remember(b"abcdef", keep=1024)
    task.release(4)
    assert task.cached(3, 3) is None
    assert task.cached(4, 10) == b"ef"
    task.release(100)  # past the end: nothing left, nothing broken
    assert task.cached(5, 1) is None
    task.remember(b"gh", keep=1024)
    assert task.cached(6, 2) == b"gh"


# The journal -----------------------------------------------------------------------------


def test_a_task_is_replayed_whole_after_a_restart(tmp_path: Path) -> None:
    written = _journal(tmp_path)
    meta = _meta()
    written.write([Accept(snapshot(meta)), Start("r-1", os.getpid(), 5)])
    written.write([Output("r-1", 0, b"before "), Output("r-1", 7, b"the restart")])
    meta.result = TaskResult("finished", 9, exit_code=3)
    meta.produced = 18
    written.write([Result(snapshot(meta))])
    written.close()

    replayed = _journal(tmp_path)
    task = replayed.tasks["r-1"]
    assert task.size == 18
    assert replayed.read("r-1", 0, 100) == b"before the restart"
    assert replayed.read("r-1", 3, 6) == b"ore th"
    assert task.meta.result == TaskResult("finished", 9, exit_code=3)
    assert task.meta.pid == os.getpid()
    assert task.meta.proc_start == journal.process_start_time(os.getpid())


def test_a_torn_record_at_the_end_is_cut_off(tmp_path: Path) -> None:
    written = _journal(tmp_path)
    written.write([Accept(snapshot(_meta())), Output("r-1", 0, b"kept")])
    written.write([Output("r-1", 4, b"torn away")])
    written.close()
    path = tmp_path / "journal"
    path.write_bytes(path.read_bytes()[:-3])  # the machine stopped mid-write

    replayed = _journal(tmp_path)
    assert replayed.tasks["r-1"].size == 4
    assert replayed.read("r-1", 0, 100) == b"kept"
    replayed.write([Output("r-1", 4, b" and more")])
    replayed.close()
    assert _journal(tmp_path).read("r-1", 0, 100) == b"kept and more"


def test_a_forgotten_task_is_gone_but_known(tmp_path: Path) -> None:
    written = _journal(tmp_path)
    written.write([Accept(snapshot(_meta())), Output("r-1", 0, b"x"), Forget("r-1")])
    written.close()
    replayed = _journal(tmp_path)
    assert replayed.tasks == {}
    assert replayed.done == ["r-1"]


def test_compaction_keeps_only_what_is_live(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal, "COMPACT_BYTES", 64 * 1024)
    written = _journal(tmp_path)
    chunk = b"z" * 4096
    # A task that runs long: the server has stored all but its last 8 KiB.
    written.write([Accept(snapshot(_meta("r-long")))])
    for n in range(40):
        written.write([Output("r-long", n * len(chunk), chunk)])
    written.write([Release("r-long", 32 * len(chunk))])
    # Many quick tasks, all stored and forgotten.
    for n in range(200):
        task_id = f"r-{n}"
        written.write([Accept(snapshot(_meta(task_id))), Output(task_id, 0, chunk)])
        written.write([Forget(task_id)])
    size = (tmp_path / "journal").stat().st_size
    assert size < 100 * 1024, f"compacted: {size} bytes"
    written.write([Output("r-long", 40 * len(chunk), b"tail")])
    assert written.read("r-long", 39 * len(chunk), len(chunk) + 4) == chunk + b"tail"
    written.close()

    replayed = _journal(tmp_path)
    assert set(replayed.tasks) == {"r-long"}
    assert replayed.tasks["r-long"].size == 40 * len(chunk) + 4
    assert replayed.read("r-long", 38 * len(chunk), 2 * len(chunk) + 4) == chunk * 2 + b"tail"
    assert set(replayed.done) == {f"r-{n}" for n in range(200)}


def test_the_spool_of_an_older_agent_is_imported(tmp_path: Path) -> None:
    old = tmp_path / "tasks" / "r-old"
    old.mkdir(parents=True)
    meta = _meta("r-old")
    fields = meta.to_json() | {"script_dir": "/tmp/cloudassist-x", "stop_reason": ""}
    fields.pop("script_path")
    (old / "task.json").write_text(json.dumps(fields))
    (old / "output").write_bytes(b"old output")
    (tmp_path / "done").write_text("r-a\nr-b\n")

    imported = _journal(tmp_path)
    assert imported.read("r-old", 0, 100) == b"old output"
    assert imported.tasks["r-old"].meta.script_path == "/tmp/cloudassist-x"
    assert imported.done == ["r-a", "r-b"]
    assert not (tmp_path / "tasks").exists()
    assert not (tmp_path / "done").exists()


# The spool: batched writes from the event loop -----------------------------------------


async def test_records_appended_together_share_one_write(
    tmp_path: Path, io: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = Spool(tmp_path, io)
    await spool.load()
    writes = count_writes(monkeypatch)
    written = [spool.append(Accept(snapshot(_meta(f"r-{n}")))) for n in range(50)]
    ran = await spool.call(lambda: "after the records")
    assert ran == "after the records"
    assert all(w.done() for w in written)
    assert len(writes) == 1, writes
    await spool.close()


async def test_lingering_output_goes_to_disk_with_the_result_in_one_write(
    tmp_path: Path, io: ThreadPoolExecutor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A quick task: its output may wait for its result, so both cost one write."""
    spool = await _spool_holding_a_task(tmp_path, io)
    writes = count_writes(monkeypatch)
    # A minute's linger: only the result's write can take the output to disk in time.
    output_written = spool.append(Output("r-1", 0, b"hi\n"), linger=60)
    await asyncio.sleep(0)  # the event loop turns: the output alone is not written
    assert writes == []
    assert not output_written.done()
    meta = _meta()
    meta.result = TaskResult("finished", 1, exit_code=0)
    await asyncio.wait_for(spool.append(Result(snapshot(meta))), 5)
    assert output_written.done()
    assert len(writes) == 1, writes
    await spool.close()
    assert _journal(tmp_path).read("r-1", 0, 3) == b"hi\n"


async def test_lingering_output_is_written_when_its_linger_is_over(
    tmp_path: Path, io: ThreadPoolExecutor
) -> None:
    spool = await _spool_holding_a_task(tmp_path, io)
    await asyncio.wait_for(spool.append(Output("r-1", 0, b"hi\n"), linger=0.01), 5)
    await spool.close()
    assert _journal(tmp_path).read("r-1", 0, 3) == b"hi\n"


async def test_a_forgotten_task_is_known_at_once_and_after_a_restart(
    tmp_path: Path, io: ThreadPoolExecutor
) -> None:
    spool = await _spool_holding_a_task(tmp_path, io)
    assert not spool.knows("r-1"), "held, not yet stored by the server"
    spool.forget("r-1")
    assert spool.knows("r-1")
    await spool.close()
    again = Spool(tmp_path, io)
    assert await again.load() == []
    assert again.knows("r-1"), "remembered across a restart"
    await again.close()


async def test_a_failed_call_reaches_its_caller_and_the_spool_goes_on(
    tmp_path: Path, io: ThreadPoolExecutor
) -> None:
    spool = Spool(tmp_path, io)
    await spool.load()

    def fails() -> None:
        raise OSError("no space left")

    with pytest.raises(OSError, match="no space left"):
        await spool.call(fails)
    await asyncio.wait_for(spool.append(Accept(snapshot(_meta()))), 5)
    await spool.close()
    assert "r-1" in _journal(tmp_path).tasks
