"""The agent's state directory: every task it holds, its output, and its result, on disk.

Nothing is forgotten until the server acknowledges it, so output and results survive a lost
connection, a server restart, or a restart of the agent itself.

    STATE_DIR/credentials.json     the instance id and secret from registration (0600)
    STATE_DIR/tasks/ID/task.json   what to run, the process, the result
    STATE_DIR/tasks/ID/output      the output (up to the task's output limit)
    STATE_DIR/done                 ids of tasks the server has fully stored (de-duplication)

The methods do blocking file I/O: the session calls them from its I/O thread.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

DONE_KEEP = 10_000


@dataclass(frozen=True)
class Credentials:
    """What registration gave this agent; the secret authenticates every hello."""

    instance_id: str
    instance_secret: str
    region_id: str


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
    # The private temporary directory the script runs from (removed when it ends).
    script_dir: str = ""
    result: TaskResult | None = None
    stop_reason: str = ""

    @classmethod
    def from_json(cls, text: str) -> TaskMeta:
        data = json.loads(text)
        result = data.pop("result", None)
        meta = cls(**data)
        meta.result = TaskResult(**result) if result else None
        return meta


@dataclass
class SpooledTask:
    meta: TaskMeta
    directory: Path
    size: int = 0  # bytes of output on disk
    # The newest output, also kept in memory (bytes [recent_offset, size)), so that sending it
    # needs no read back from disk; older bytes are read from the file.
    recent: bytearray = field(default_factory=bytearray)
    recent_offset: int = 0

    def __post_init__(self) -> None:
        self.recent_offset = self.size - len(self.recent)

    @property
    def output_path(self) -> Path:
        return self.directory / "output"

    def create(self) -> None:
        self.directory.mkdir(mode=0o700)
        self.output_path.touch(mode=0o600)
        self.save()

    def save(self) -> None:
        tmp = self.directory / "task.json.tmp"
        tmp.write_text(json.dumps(asdict(self.meta)))
        tmp.replace(self.directory / "task.json")

    def append(self, data: bytes) -> None:
        """Writes output to disk (blocking: call it from the I/O thread)."""
        with self.output_path.open("ab") as out:
            out.write(data)

    def remember(self, data: bytes, keep: int) -> None:
        """Counts output that `append` stored and keeps the newest `keep` bytes in memory
        (on the event loop, after the append)."""
        self.size += len(data)
        self.recent += data
        excess = len(self.recent) - keep
        if excess > 0:
            del self.recent[:excess]
        self.recent_offset = self.size - len(self.recent)

    def cached(self, offset: int, length: int) -> bytes | None:
        """Output from memory, or None when it must be read from disk."""
        if not self.recent_offset <= offset < self.recent_offset + len(self.recent):
            return None
        start = offset - self.recent_offset
        return bytes(self.recent[start : start + length])

    def release(self, upto: int) -> None:
        """The server has stored output up to `upto`: memory before it is not needed."""
        drop = min(upto, self.size) - self.recent_offset
        if drop > 0:
            del self.recent[:drop]
            self.recent_offset += drop

    def read(self, offset: int, length: int) -> bytes:
        with self.output_path.open("rb") as source:
            source.seek(offset)
            return source.read(length)


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.tasks_dir = root / "tasks"
        self.tasks_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self._done_path = root / "done"
        self._done: list[str] = (
            self._done_path.read_text().split() if self._done_path.exists() else []
        )
        self._done_set = set(self._done)

    def credentials(self) -> Credentials | None:
        """The instance's registration, if the agent has registered."""
        path = self.root / "credentials.json"
        if not path.exists():
            return None
        data = json.loads(path.read_text())
        return Credentials(data["instance_id"], data["instance_secret"], data["region_id"])

    def save_credentials(self, credentials: Credentials) -> None:
        path = self.root / "credentials.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(asdict(credentials), out)
        tmp.replace(path)

    def load(self) -> list[SpooledTask]:
        tasks = []
        for directory in sorted(self.tasks_dir.iterdir()):
            meta_path = directory / "task.json"
            if not meta_path.exists():
                shutil.rmtree(directory, ignore_errors=True)
                continue
            meta = TaskMeta.from_json(meta_path.read_text())
            output = directory / "output"
            size = output.stat().st_size if output.exists() else 0
            tasks.append(SpooledTask(meta, directory, size))
        return tasks

    def prepare(self, meta: TaskMeta) -> SpooledTask:
        """A new task, not yet on disk (no I/O: `SpooledTask.create` writes it)."""
        return SpooledTask(meta, self.tasks_dir / meta.task_id)

    def knows(self, task_id: str) -> bool:
        """Whether the server has already stored everything of `task_id` (no disk access:
        the directories of tasks still held are all loaded at start-up)."""
        return task_id in self._done_set

    def forget(self, task: SpooledTask) -> None:
        """The server stored everything of this task: drop it, remember its id."""
        shutil.rmtree(task.directory, ignore_errors=True)
        task_id = task.meta.task_id
        self._done.append(task_id)
        self._done_set.add(task_id)
        if len(self._done) > 2 * DONE_KEEP:
            self._done = self._done[-DONE_KEEP:]
            self._done_set = set(self._done)
            tmp = self._done_path.with_suffix(".tmp")
            tmp.write_text("\n".join(self._done) + "\n")
            tmp.replace(self._done_path)
        else:
            with self._done_path.open("a") as out:
                out.write(task_id + "\n")
