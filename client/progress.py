"""The live view of an invocation on a terminal.

Output goes by as prefixed lines, each instance gets a line when its run ends, and the last line
of the terminal is a status line (done / running / failed / pending, elapsed) redrawn in place.
When the invocation is over, a summary table. The formatting is pure functions; LiveView only
decides when to write them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import BinaryIO

from cloudassist.client import render
from cloudassist.client.style import PLAIN, Palette, Style, paint_state
from cloudassist.v1 import command_pb2 as pb

DONE = frozenset({pb.EXECUTION_STATE_SUCCESS})
FAILED = frozenset(
    {
        pb.EXECUTION_STATE_FAILED,
        pb.EXECUTION_STATE_TIMEOUT,
        pb.EXECUTION_STATE_ABORTED,
        pb.EXECUTION_STATE_INVALID,
        pb.EXECUTION_STATE_ERROR,
    }
)
STOPPED = frozenset({pb.EXECUTION_STATE_CANCELLED, pb.EXECUTION_STATE_TERMINATED})
RUNNING = frozenset({pb.EXECUTION_STATE_RUNNING, pb.EXECUTION_STATE_STOPPING})
TERMINAL = DONE | FAILED | STOPPED

# Erases the terminal's current line and puts the cursor at its start.
CLEAR_LINE = b"\r\x1b[2K"


def state_name(state: pb.ExecutionState.ValueType) -> str:
    return render.enum_suffix(pb.ExecutionState.Name(state))


@dataclass
class InstanceProgress:
    """Where one instance of the invocation is: its latest record and when it ran."""

    instance_id: str
    record_id: str = ""
    state: pb.ExecutionState.ValueType = pb.EXECUTION_STATE_PENDING
    exit_code: int | None = None
    error_code: str = ""
    error_info: str = ""
    # Server times, in seconds: when the record was first seen running, and ended.
    started: float | None = None
    finished: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


def apply_change(progress: dict[str, InstanceProgress], change: pb.StateChange) -> bool:
    """Records `change`; True when it ended the instance's record (the first time it did)."""
    current = progress.setdefault(change.instance_id, InstanceProgress(change.instance_id))
    if change.record_id != current.record_id:
        # A new run (a periodic invocation's next fire): it starts from nothing.
        current = progress[change.instance_id] = InstanceProgress(
            change.instance_id, record_id=change.record_id
        )
    was_terminal = current.terminal
    when = change.time.ToMicroseconds() / 1e6 if change.HasField("time") else None
    current.state = change.state
    current.exit_code = change.exit_code if change.HasField("exit_code") else None
    current.error_code = change.error_code
    current.error_info = change.error_info
    if change.state in RUNNING and current.started is None:
        current.started = when
    if current.terminal and not was_terminal:
        current.finished = when
        return True
    return False


def apply_results(
    progress: dict[str, InstanceProgress], results: Iterable[pb.InvocationResult]
) -> None:
    """Takes each record's start and finish times from the server's results: exact, also for
    records that had ended before the view was watching."""
    for result in results:
        current = progress.get(result.instance_id)
        if current is None or current.record_id != result.record_id:
            continue
        if result.HasField("start_time") and result.start_time.seconds:
            current.started = result.start_time.ToMicroseconds() / 1e6
        if result.HasField("finish_time") and result.finish_time.seconds:
            current.finished = result.finish_time.ToMicroseconds() / 1e6


@dataclass(frozen=True)
class Counts:
    done: int = 0
    running: int = 0
    failed: int = 0
    stopped: int = 0
    pending: int = 0


def count(progress: Iterable[InstanceProgress]) -> Counts:
    done = running = failed = stopped = pending = 0
    for p in progress:
        if p.state in DONE:
            done += 1
        elif p.state in FAILED:
            failed += 1
        elif p.state in STOPPED:
            stopped += 1
        elif p.state in RUNNING:
            running += 1
        else:
            pending += 1
    return Counts(done, running, failed, stopped, pending)


def format_duration(seconds: float | None) -> str:
    """`0.4s`, `59.9s`, `2m05s`, `1h02m`; `-` when unknown."""
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def counts_line(counts: Counts, elapsed: float, palette: Palette = PLAIN) -> str:
    """`1 done, 2 running, 0 failed, 0 pending  [3.2s]`; stopped only when there are some.
    Non-zero counts are coloured."""

    def part(n: int, word: str, color: Style) -> str:
        text = f"{n} {word}"
        return palette.paint(text, color) if n else text

    parts = [
        part(counts.done, "done", "green"),
        part(counts.running, "running", "yellow"),
        part(counts.failed, "failed", "red"),
    ]
    if counts.stopped:
        parts.append(part(counts.stopped, "stopped", "dim"))
    parts.append(f"{counts.pending} pending")
    return ", ".join(parts) + "  " + palette.paint(f"[{format_duration(elapsed)}]", "dim")


def finish_line(p: InstanceProgress, palette: Palette = PLAIN) -> str:
    """`i-b: FAILED, exit 3, 2.1s`, with the error code and text when there is one."""
    parts = [paint_state(palette, state_name(p.state))]
    if p.exit_code is not None:
        parts.append(f"exit {p.exit_code}")
    parts.append(format_duration(p.duration))
    # A failed script's exit code says it all; other errors need their words.
    if p.error_code and p.state != pb.EXECUTION_STATE_FAILED:
        parts.append(p.error_code + (f": {p.error_info}" if p.error_info else ""))
    return f"{palette.paint(p.instance_id, 'bold')}: " + ", ".join(parts)


def summary_table(progress: Iterable[InstanceProgress], palette: Palette = PLAIN) -> list[str]:
    """One row per instance, by instance id."""
    return render.format_table(
        ["INSTANCE", "STATUS", "EXIT", "DURATION", "ERROR"],
        [
            [
                p.instance_id,
                paint_state(palette, state_name(p.state)),
                "-" if p.exit_code is None else p.exit_code,
                format_duration(p.duration),
                p.error_code or "-",
            ]
            for p in sorted(progress, key=lambda p: p.instance_id)
        ],
        palette,
    )


def line_prefix(instance_id: str, palette: Palette = PLAIN) -> bytes:
    return (palette.paint(instance_id, "cyan") + " | ").encode()


class LiveView:
    """Writes an invocation's progress to a terminal."""

    def __init__(
        self,
        out: BinaryIO,
        palette: Palette,
        instance_ids: Sequence[str] = (),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.palette = palette
        self.clock = clock
        self.started = clock()
        self.progress = {i: InstanceProgress(i) for i in instance_ids}
        self._partial: dict[str, bytes] = {}
        self._status_shown = False

    def output(self, instance_id: str, data: bytes) -> None:
        text = self._partial.pop(instance_id, b"") + data
        *lines, rest = text.split(b"\n")
        if rest:
            self._partial[instance_id] = rest
        self._write([line_prefix(instance_id, self.palette) + line for line in lines])

    def state_change(self, change: pb.StateChange) -> None:
        ended = apply_change(self.progress, change)
        lines = []
        if ended:
            rest = self._partial.pop(change.instance_id, b"")
            if rest:
                lines.append(line_prefix(change.instance_id, self.palette) + rest)
            lines.append(finish_line(self.progress[change.instance_id], self.palette).encode())
        self._write(lines)

    def status(self) -> str:
        return counts_line(count(self.progress.values()), self.clock() - self.started, self.palette)

    def redraw(self) -> None:
        """Draws the status line again (the elapsed time moves on)."""
        self._write([])

    def finish(self, results: Iterable[pb.InvocationResult] = ()) -> None:
        """Replaces the status line with the summary table and the final counts."""
        apply_results(self.progress, results)
        lines = [line_prefix(i, self.palette) + rest for i, rest in self._partial.items()]
        self._partial.clear()
        lines += [b""] + [
            line.encode() for line in summary_table(self.progress.values(), self.palette)
        ]
        lines += [self.status().encode()]
        self._write(lines, status=False)

    def abort(self) -> None:
        """Leaves the terminal on a fresh line (after Ctrl-C or a failed call)."""
        if self._status_shown:
            self.out.write(b"\n")
            self.out.flush()
            self._status_shown = False

    def _write(self, lines: list[bytes], status: bool = True) -> None:
        chunks = [CLEAR_LINE] if self._status_shown else []
        chunks += [line + b"\n" for line in lines]
        if status:
            chunks.append(self.status().encode())
        self._status_shown = status
        self.out.write(b"".join(chunks))
        self.out.flush()
