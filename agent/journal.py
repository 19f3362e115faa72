"""The agent's spool on disk: one append-only journal of what happened to each task.

Every change (a task accepted, its process started, output, its result, the server having
stored all of it) is a record appended to `STATE_DIR/journal`; many records go out in one
write(2), so a quick task costs one or two writes instead of a directory, three JSON files
and an output file. A record is on disk (in the page cache: it survives the agent's crash,
as the per-file spool did) when `write` returns. On start the journal is replayed; a torn
record at the end (a crash of the machine mid-write) is cut off. When the journal has grown
well past what is still live, it is rewritten with only that (tasks not yet forgotten, their
output the server has not acknowledged, the ids of forgotten tasks) and renamed over the old
one, so it never grows without bound. The records and their framing are in records.py.

Blocking file I/O: only the agent's I/O thread calls this module.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cloudassist.agent.records import (
    ACCEPT,
    DONE,
    FORGET,
    HEADER,
    OUTPUT,
    OUTPUT_HEAD,
    RESULT,
    SNAPSHOT,
    START,
    Accept,
    Forget,
    Output,
    Record,
    Release,
    Result,
    Start,
    TaskMeta,
    crc_ok,
    frame,
    frame_json,
    output_payload,
)

log = logging.getLogger(__name__)


# Rewrite the journal once it is this large and at least twice what is live.
COMPACT_BYTES = 32 * 1024 * 1024
# Forgotten task ids kept (a task dispatched again after this many others runs again).
DONE_KEEP = 10_000


@dataclass
class _Segment:
    """Output bytes [offset, offset + length) of a task, at `position` in the journal."""

    offset: int
    position: int
    length: int


@dataclass
class JournalTask:
    meta: TaskMeta
    # Output below `base` is not in the journal any more (stored by the server).
    base: int = 0
    size: int = 0
    segments: list[_Segment] = field(default_factory=list)

    def live_bytes(self) -> int:
        return sum(s.length for s in self.segments)


def process_start_time(pid: int) -> str | None:
    """Field 22 of /proc/PID/stat: tells a process apart from a later one with the same pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Journal:
    def __init__(self, root: Path) -> None:
        self.path = root / "journal"
        self._root = root
        self.tasks: dict[str, JournalTask] = {}
        self.done: list[str] = []
        self._fd = -1
        self._size = 0

    # Start-up ------------------------------------------------------------------------

    def open(self) -> None:
        """Replays the journal (importing a spool of an older agent version first)."""
        self._import_legacy()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        good = 0
        for position, kind, payload in self._records():
            self._replay(kind, payload, position)
            good = position + HEADER.size + len(payload)
        size = os.fstat(self._fd).st_size
        if good < size:
            log.warning("cut a torn record off the end of %s (%d bytes)", self.path, size - good)
            os.ftruncate(self._fd, good)
        self._size = good
        self.done = self.done[-DONE_KEEP:]

    def _records(self) -> Iterator[tuple[int, int, bytes]]:
        position = 0
        with open(self._fd, "rb", closefd=False) as source:
            source.seek(0)
            while True:
                header = source.read(HEADER.size)
                if len(header) < HEADER.size:
                    return
                crc, kind, length = HEADER.unpack(header)
                payload = source.read(length)
                if len(payload) < length or not crc_ok(crc, kind, payload):
                    return
                yield position, kind, payload
                position += HEADER.size + length

    def _replay(self, kind: int, payload: bytes, position: int) -> None:
        if kind == OUTPUT:
            offset, id_length = OUTPUT_HEAD.unpack_from(payload)
            task_id = payload[OUTPUT_HEAD.size : OUTPUT_HEAD.size + id_length].decode()
            start = OUTPUT_HEAD.size + id_length
            task = self.tasks.get(task_id)
            if task is not None and offset == task.size:
                data_position = position + HEADER.size + start
                length = len(payload) - start
                task.segments.append(_Segment(offset, data_position, length))
                task.size += length
            return
        value = json.loads(payload)
        if kind in (ACCEPT, SNAPSHOT):
            meta = TaskMeta.from_json(value["meta"])
            base = int(value.get("base", 0))
            self.tasks[meta.task_id] = JournalTask(meta, base, base)
        elif kind == START:
            task = self.tasks.get(value["task_id"])
            if task is not None:
                task.meta.started = True
                task.meta.pid = value["pid"]
                task.meta.proc_start = value["proc_start"]
                task.meta.start_ms = value["start_ms"]
        elif kind == RESULT:
            meta = TaskMeta.from_json(value["meta"])
            task = self.tasks.get(meta.task_id)
            if task is not None:
                task.meta = meta
        elif kind == FORGET:
            self.tasks.pop(value["task_id"], None)
            self.done.append(value["task_id"])
        elif kind == DONE:
            self.done.extend(value["ids"])

    def _import_legacy(self) -> None:
        """An older agent kept a directory per task (task.json, output) and a `done` file: its
        tasks become journal records, then those files go."""
        tasks_dir = self._root / "tasks"
        done_file = self._root / "done"
        if not tasks_dir.is_dir() and not done_file.exists():
            return
        parts: list[bytes] = []
        if done_file.exists():
            parts += frame_json(DONE, {"ids": done_file.read_text().split()[-DONE_KEEP:]})
        for directory in sorted(tasks_dir.iterdir()) if tasks_dir.is_dir() else []:
            meta_path = directory / "task.json"
            if not meta_path.exists():
                continue
            meta = TaskMeta.from_json(json.loads(meta_path.read_text()))
            parts += frame_json(SNAPSHOT, {"meta": meta.to_json(), "base": 0})
            output = directory / "output"
            data = output.read_bytes() if output.exists() else b""
            if data:
                parts += frame(OUTPUT, output_payload(meta.task_id, 0, data))
        with open(self.path, "ab") as out:
            out.write(b"".join(parts))
        shutil.rmtree(tasks_dir, ignore_errors=True)
        done_file.unlink(missing_ok=True)
        log.info("moved the spool of an older agent version into %s", self.path)

    # Writing -------------------------------------------------------------------------

    def write(self, records: Iterable[Record]) -> None:
        """Appends `records` in one write; they are on disk when this returns."""
        parts: list[bytes] = []
        appended: list[tuple[JournalTask, Output, int]] = []
        position = self._size
        for record in records:
            if isinstance(record, Output):
                task = self.tasks.get(record.task_id)
                if task is None or record.offset != task.size:
                    log.warning("output of %s out of place; not spooled", record.task_id)
                    continue
                framed = frame(OUTPUT, output_payload(record.task_id, record.offset, record.data))
                data_at = position + sum(len(p) for p in framed) - len(record.data)
                appended.append((task, record, data_at))
                task.size += len(record.data)
            elif isinstance(record, Release):
                self._release(record.task_id, record.upto)
                continue
            else:
                framed = self._encode(record)
            parts += framed
            position += sum(len(p) for p in framed)
        if parts:
            data = b"".join(parts)
            _write_all(self._fd, data)
            self._size += len(data)
        for task, record, data_at in appended:
            task.segments.append(_Segment(record.offset, data_at, len(record.data)))
        if self._size > COMPACT_BYTES and self._size > 2 * self._live_bytes():
            self.compact()

    def _encode(self, record: Record) -> list[bytes]:
        if isinstance(record, Accept):
            meta = record.meta
            self.tasks[meta.task_id] = JournalTask(meta)
            return frame_json(ACCEPT, {"meta": meta.to_json()})
        if isinstance(record, Start):
            proc_start = process_start_time(record.pid)
            task = self.tasks.get(record.task_id)
            if task is not None:
                task.meta.started = True
                task.meta.pid = record.pid
                task.meta.start_ms = record.start_ms
                task.meta.proc_start = proc_start
            value = {
                "task_id": record.task_id,
                "pid": record.pid,
                "proc_start": proc_start,
                "start_ms": record.start_ms,
            }
            return frame_json(START, value)
        if isinstance(record, Result):
            task = self.tasks.get(record.meta.task_id)
            if task is not None:
                # What only the journal learnt (the Start record) stays.
                meta = record.meta
                meta.proc_start = task.meta.proc_start or meta.proc_start
                meta.pid = meta.pid if meta.pid is not None else task.meta.pid
                meta.start_ms = meta.start_ms if meta.start_ms is not None else task.meta.start_ms
                meta.started = meta.started or task.meta.started
                task.meta = meta
            return frame_json(RESULT, {"meta": record.meta.to_json()})
        assert isinstance(record, Forget)
        self.tasks.pop(record.task_id, None)
        self.done.append(record.task_id)
        return frame_json(FORGET, {"task_id": record.task_id})

    def _release(self, task_id: str, upto: int) -> None:
        task = self.tasks.get(task_id)
        if task is None:
            return
        while task.segments and task.segments[0].offset + task.segments[0].length <= upto:
            dropped = task.segments.pop(0)
            task.base = dropped.offset + dropped.length

    def _live_bytes(self) -> int:
        return sum(t.live_bytes() for t in self.tasks.values()) + 64 * len(self.done)

    def compact(self) -> None:
        """Rewrites the journal with only what is live, then renames it over the old one."""
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o600)
        try:
            self.done = self.done[-DONE_KEEP:]
            position = 0
            head = b"".join(frame_json(DONE, {"ids": self.done}))
            _write_all(fd, head)
            position += len(head)
            for task in self.tasks.values():
                snapshot = b"".join(
                    frame_json(SNAPSHOT, {"meta": task.meta.to_json(), "base": task.base})
                )
                _write_all(fd, snapshot)
                position += len(snapshot)
                moved: list[_Segment] = []
                for segment in task.segments:
                    data = os.pread(self._fd, segment.length, segment.position)
                    payload = output_payload(task.meta.task_id, segment.offset, data)
                    framed = b"".join(frame(OUTPUT, payload))
                    _write_all(fd, framed)
                    moved.append(
                        _Segment(segment.offset, position + len(framed) - len(data), len(data))
                    )
                    position += len(framed)
                task.segments = moved
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(self._fd)
        self._fd = fd
        self._size = position

    # Reading -------------------------------------------------------------------------

    def read(self, task_id: str, offset: int, length: int) -> bytes:
        """Output of a task from the journal (what memory no longer holds)."""
        task = self.tasks.get(task_id)
        if task is None:
            return b""
        pieces: list[bytes] = []
        end = offset + length
        at = offset  # only bytes that follow on from `offset` (never across a released gap)
        for segment in task.segments:
            seg_end = segment.offset + segment.length
            if seg_end <= at or segment.offset >= end:
                continue
            if segment.offset > at:
                break
            stop = min(end, seg_end)
            pieces.append(os.pread(self._fd, stop - at, segment.position + at - segment.offset))
            at = stop
        return b"".join(pieces)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
