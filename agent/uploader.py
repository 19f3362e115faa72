"""What the agent sends, and when: acceptances, output and results of the tasks it holds.

One uploader runs per connection. It waits until a task has something new, lets output of
running tasks gather briefly, then packs what is ready into reports (within a byte budget per
message and a window of unacknowledged output per task) and puts them in the outbox.
"""

from __future__ import annotations

import asyncio
import contextlib

from cloudassist.agent import wire
from cloudassist.agent.spool import Spool
from cloudassist.agent.tasks import OUTPUT_LINGER_SECONDS, HeldTask, TaskMap
from cloudassist.v1 import agent_pb2 as pb

CHUNK = 256 * 1024
# Output in one `reports` message (protocol 2), over all its tasks.
REPORT_BYTES = 1024 * 1024
# A task's acceptance waits this long to go out with its output and result (a quick task then
# costs one message up instead of three); a task still running by then is reported anyway.
ACCEPT_HOLD_SECONDS = 0.1


class Uploader:
    def __init__(self, tasks: TaskMap, spool: Spool) -> None:
        self._tasks = tasks
        self._spool = spool

    async def run(self, outbox: asyncio.Queue[pb.ConnectRequest], protocol: int) -> None:
        """Until cancelled (the connection ends): reports in `protocol`'s messages."""
        loop = asyncio.get_running_loop()
        changed = self._tasks.changed
        while True:
            changed.clear()
            if not self._results_to_send() and self._output_to_send():
                # Only output of running tasks: let more of it gather, but no longer than a
                # result takes to come (a quick task's output goes with it).
                await self._linger(loop.time() + OUTPUT_LINGER_SECONDS)
            now = loop.time()
            wake_at: float | None = None
            reports: list[pb.TaskReport] = []
            budget = REPORT_BYTES
            for held in list(self._tasks.tasks.values()):
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
                for message in wire.messages(reports, protocol):
                    await outbox.put(message)
                continue  # more may be ready (past the budget, or in the window)
            timeout = None if wake_at is None else max(0.0, wake_at - loop.time())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), timeout)

    def _results_to_send(self) -> bool:
        return any(h.result_ready and not h.result_sent for h in self._tasks.tasks.values())

    def _output_to_send(self) -> bool:
        return any(h.sent < h.spooled.size for h in self._tasks.tasks.values())

    async def _linger(self, until: float) -> None:
        """Waits until `until`, or until a task has a result to send."""
        loop = asyncio.get_running_loop()
        changed = self._tasks.changed
        while (left := until - loop.time()) > 0:
            changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(changed.wait(), left)
            if self._results_to_send():
                return

    async def _report(self, held: HeldTask, now: float, budget: int) -> pb.TaskReport | None:
        """What is new about a task: its acceptance, output, result; None: nothing."""
        meta = held.meta
        spooled = held.spooled
        result = meta.result if held.result_ready else None
        news = False
        accepted_ms: int | None = None
        accept_held_ms = 0
        if not held.announced:
            held.announced = True
            news = True
            # A task refused before it started reports only its error.
            if not (result is not None and result.kind == "error" and not meta.started):
                accepted_ms = meta.accepted_ms
                accept_held_ms = max(0, int((now - held.accepted_at) * 1000))
        offset, data = held.sent, b""
        in_flight = held.sent - held.acked
        if held.sent < spooled.size and in_flight < wire.WINDOW:
            length = min(CHUNK, spooled.size - held.sent, wire.WINDOW - in_flight, max(budget, 1))
            cached = spooled.cached(offset, length)
            if cached is None:  # older than what memory keeps (a resume): read the journal
                cached = await self._spool.read(meta.task_id, offset, length)
            # An acknowledgement or a rewind may have moved the task on while the journal was
            # read: then these bytes are not the next to send.
            data = cached if held.sent == offset else b""
            if data:
                held.sent += len(data)
                news = True
        ended = None
        if result is not None and not held.result_sent and held.sent >= spooled.size:
            held.result_sent = True
            news = True
            ended = meta
        if not news:
            return None
        return wire.task_report(
            meta.task_id,
            accepted_ms=accepted_ms,
            accept_held_ms=accept_held_ms,
            offset=offset,
            data=data,
            ended=ended,
        )
