"""The journal's records: what the agent hands the I/O thread, and how each is framed on disk.

    record = crc32 (4) | kind (1) | length (4) | payload (length)

Output records carry the task id and the bytes as they are (offset, id length, id, data);
every other record is a JSON object. A record's kind says which.
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields, replace

HEADER = struct.Struct("<IBI")
OUTPUT_HEAD = struct.Struct("<qH")  # offset, length of the task id; then the id and the data

ACCEPT = 1  # a task's metadata, as dispatched
START = 2  # its process started
OUTPUT = 3  # output at an offset
RESULT = 4  # its result
FORGET = 5  # the server stored everything: the task is done
SNAPSHOT = 6  # a task's whole metadata, written by compaction
DONE = 7  # ids of forgotten tasks, written by compaction


@dataclass
class TaskResult:
    kind: str  # finished | stopped | timed_out | error
    time_ms: int
    exit_code: int | None = None
    error_code: str = ""
    error_info: str = ""


@dataclass
class TaskMeta:
    task_id: str
    invoke_id: str
    command_type: str
    timeout_seconds: int
    working_dir: str
    username: str
    output_limit: int
    accepted_ms: int
    started: bool = False
    start_ms: int | None = None
    pid: int | None = None
    # /proc start time of the process, so a recycled pid is never killed by mistake.
    proc_start: str | None = None
    produced: int = 0
    # Where the script was written: a file, or a private directory (runs as another user).
    script_path: str = ""
    result: TaskResult | None = None

    def to_json(self) -> dict[str, object]:
        # By hand: dataclasses.asdict deep-copies field by field, and this runs for every
        # task's acceptance and result.
        data: dict[str, object] = {name: getattr(self, name) for name in _META_FIELDS}
        if self.result is not None:
            data["result"] = {name: getattr(self.result, name) for name in _RESULT_FIELDS}
        return data

    @classmethod
    def from_json(cls, data: dict[str, object]) -> TaskMeta:
        data = dict(data)
        result = data.pop("result", None)
        # Fields of older versions (the per-file spool) that are gone.
        data.pop("stop_reason", None)
        script_dir = data.pop("script_dir", None)
        if script_dir and not data.get("script_path"):
            data["script_path"] = script_dir
        known = cls.__dataclass_fields__
        meta = cls(**{k: v for k, v in data.items() if k in known})  # type: ignore[arg-type]
        meta.result = TaskResult(**result) if isinstance(result, dict) else None
        return meta


_META_FIELDS = tuple(f.name for f in fields(TaskMeta))
_RESULT_FIELDS = tuple(f.name for f in fields(TaskResult))


# What the agent hands the I/O thread -------------------------------------------------


@dataclass(frozen=True)
class Accept:
    meta: TaskMeta  # a copy: the journal keeps it


def snapshot(meta: TaskMeta) -> TaskMeta:
    """A copy of `meta` to hand to the I/O thread (the event loop goes on changing its own)."""
    copy = replace(meta)
    if meta.result is not None:
        copy.result = replace(meta.result)
    return copy


@dataclass(frozen=True)
class Start:
    task_id: str
    pid: int
    start_ms: int


@dataclass(frozen=True)
class Output:
    task_id: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class Result:
    meta: TaskMeta  # a copy, with its result, produced, start


@dataclass(frozen=True)
class Forget:
    task_id: str


@dataclass(frozen=True)
class Release:
    """The server stored `task_id`'s output below `upto`: compaction need not keep it (not
    written: acknowledgements are the server's to repeat after a restart)."""

    task_id: str
    upto: int


Record = Accept | Start | Output | Result | Forget | Release


def frame(kind: int, payload: bytes | Iterable[bytes]) -> list[bytes]:
    """The parts of one record, its header first."""
    parts = [payload] if isinstance(payload, bytes) else list(payload)
    length = sum(len(p) for p in parts)
    crc = zlib.crc32(bytes([kind]))
    for part in parts:
        crc = zlib.crc32(part, crc)
    return [HEADER.pack(crc, kind, length), *parts]


def frame_json(kind: int, value: object) -> list[bytes]:
    return frame(kind, json.dumps(value, separators=(",", ":")).encode())


def output_payload(task_id: str, offset: int, data: bytes) -> list[bytes]:
    encoded = task_id.encode()
    return [OUTPUT_HEAD.pack(offset, len(encoded)), encoded, data]


def crc_ok(crc: int, kind: int, payload: bytes) -> bool:
    return zlib.crc32(payload, zlib.crc32(bytes([kind]))) == crc
