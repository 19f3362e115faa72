"""The agent's spool: output on disk, the newest of it also in memory, and what survives a
restart of the agent."""

from __future__ import annotations

from pathlib import Path

from agent.spool import Spool, SpooledTask, TaskMeta


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


def _spooled(spool: Spool, task_id: str = "r-1") -> SpooledTask:
    task = spool.prepare(_meta(task_id))
    task.create()
    return task


def _write(task: SpooledTask, data: bytes, keep: int) -> None:
    task.append(data)
    task.remember(data, keep)


def test_prepare_touches_no_disk_and_create_writes_the_task(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    task = spool.prepare(_meta())
    assert not task.directory.exists()
    task.create()
    assert (task.directory / "task.json").exists()
    assert task.output_path.read_bytes() == b""


def test_new_output_is_served_from_memory_and_matches_the_disk(tmp_path: Path) -> None:
    task = _spooled(Spool(tmp_path))
    _write(task, b"hello ", keep=1024)
    _write(task, b"world", keep=1024)
    assert task.size == 11
    assert task.cached(0, 100) == b"hello world"
    assert task.cached(6, 3) == b"wor"
    assert task.read(0, 100) == b"hello world"


def test_memory_keeps_only_the_newest_bytes(tmp_path: Path) -> None:
    task = _spooled(Spool(tmp_path))
    _write(task, b"0123456789", keep=4)
    assert task.cached(6, 4) == b"6789"
    assert task.cached(5, 4) is None, "older than memory: the caller reads the disk"
    assert task.read(5, 4) == b"5678"


def test_acknowledged_output_leaves_memory(tmp_path: Path) -> None:
    task = _spooled(Spool(tmp_path))
    _write(task, b"abcdef", keep=1024)
    task.release(4)
    assert task.cached(3, 3) is None
    assert task.cached(4, 10) == b"ef"
    task.release(100)  # past the end: nothing left, nothing broken
    assert task.cached(5, 1) is None
    _write(task, b"gh", keep=1024)
    assert task.cached(6, 2) == b"gh"


def test_a_reloaded_task_reads_its_output_from_disk(tmp_path: Path) -> None:
    task = _spooled(Spool(tmp_path))
    _write(task, b"before the restart", keep=1024)
    (reloaded,) = Spool(tmp_path).load()
    assert reloaded.size == len(b"before the restart")
    assert reloaded.cached(0, 6) is None
    assert reloaded.read(0, 6) == b"before"


def test_a_forgotten_task_is_known_without_its_directory(tmp_path: Path) -> None:
    spool = Spool(tmp_path)
    task = _spooled(spool)
    assert not spool.knows("r-1"), "held, not yet stored by the server"
    spool.forget(task)
    assert not task.directory.exists()
    assert spool.knows("r-1")
    assert Spool(tmp_path).knows("r-1"), "remembered across a restart"
