"""Live agent sessions: one per connected instance, each with its queue of messages to send."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from cloudassist.common.logs import about
from cloudassist.server.domain.errors import DomainError
from cloudassist.server.domain.reports import CancelOrder, Effects, OutputAck, RecordEnded
from cloudassist.server.domain.tasks import Task
from cloudassist.server.fleet.bus import Bus, LocalBus
from cloudassist.server.fleet.events import InvocationEvents

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drain:
    """Ask the agent to reconnect elsewhere (this server is shutting down)."""

    reason: str


@dataclass(frozen=True)
class Beat:
    """A heartbeat to an agent whose stream has been quiet (keeps proxies from cutting it)."""


Outgoing = Task | CancelOrder | OutputAck | Drain | Beat

# A session whose agent does not read this many messages is cut; the agent reconnects and
# resumes from what is stored.
MAX_QUEUED = 10_000


class AgentSession:
    def __init__(self, instance_id: str, protocol: int = 1) -> None:
        self.instance_id = instance_id
        # The agent-stream protocol negotiated in the hello.
        self.protocol = protocol
        self.queue: asyncio.Queue[Outgoing | None] = asyncio.Queue()
        self.closed = False
        # Why the agent's side of the stream was refused (a message that does not parse).
        self.error: DomainError | None = None
        # When the stream last carried a message either way (event loop time): proxies cut
        # streams idle in both directions, so traffic from the agent keeps it alive too.
        self.last_activity = asyncio.get_running_loop().time()
        # Tasks sent on this session: a task is sent once per session (agents de-duplicate
        # too, but a re-scan should not resend what is already on the wire).
        self.sent: set[str] = set()
        # When each task was written to the stream (loop time), until its agent accepts it.
        self.dispatched_at: dict[str, float] = {}

    def send(self, item: Outgoing) -> bool:
        if self.closed:
            return False
        if isinstance(item, Task):
            if item.instance_id != self.instance_id:
                # Never reached through Hub.send, which looks the session up by the task's
                # own instance; a task must not run on another machine whatever the caller.
                log.error(
                    "refused to send task %s, which is for instance %s, to instance %s",
                    item.task_id,
                    item.instance_id,
                    self.instance_id,
                )
                return True
            if item.task_id in self.sent:
                return True
            self.sent.add(item.task_id)
        if self.queue.qsize() >= MAX_QUEUED:
            log.warning("agent %s is not reading; closing its session", self.instance_id)
            self.close()
            return False
        self.queue.put_nowait(item)
        return True

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.queue.put_nowait(None)


class Hub:
    def __init__(self, events: InvocationEvents, bus: Bus | None = None) -> None:
        self.events = events
        # Tells the other servers what this one cannot do itself (their agents).
        self.bus: Bus = bus or LocalBus()
        self._sessions: dict[str, AgentSession] = {}

    def attach(self, session: AgentSession) -> None:
        """Makes `session` the instance's session; an older one is closed."""
        previous = self._sessions.get(session.instance_id)
        if previous is not None and previous is not session:
            log.info("agent %s connected again; closing its previous session", session.instance_id)
            previous.close()
        self._sessions[session.instance_id] = session

    def detach(self, session: AgentSession) -> bool:
        """Forgets `session`; False when a newer session had already replaced it."""
        session.close()
        if self._sessions.get(session.instance_id) is session:
            del self._sessions[session.instance_id]
            return True
        return False

    def disconnect(self, instance_id: str) -> None:
        """Ends the instance's session (its registration was revoked)."""
        session = self._sessions.get(instance_id)
        if session is not None:
            session.close()

    def is_online(self, instance_id: str) -> bool:
        return instance_id in self._sessions

    def online_count(self) -> int:
        return len(self._sessions)

    def send(self, instance_id: str, item: Outgoing) -> bool:
        session = self._sessions.get(instance_id)
        return session.send(item) if session is not None else False

    def local_instances(self) -> list[str]:
        return list(self._sessions)

    def carry_out(self, effects: Effects) -> None:
        """Sends what a committed store write asks for and wakes the invocation's watchers,
        here and, through the bus, on the servers holding the other agents."""
        for ack in effects.acks:
            self.send(ack.instance_id, ack)
        remote_cancels = [c for c in effects.cancels if not self.send(c.instance_id, c)]
        remote_dispatch = [
            task.instance_id for task in effects.dispatches if not self.send(task.instance_id, task)
        ]
        for reason in effects.rejected:
            log.warning("ignored agent report: %s", reason)
        log_ended(effects.ended)
        self.events.notify(effects.changed_invocations)
        if remote_cancels or remote_dispatch or effects.changed_invocations:
            self.bus.publish(remote_dispatch, remote_cancels, effects.changed_invocations)

    def deliver_cancels(self, cancels: list[CancelOrder]) -> None:
        """Cancels another server decided for agents that may be connected here."""
        for cancel in cancels:
            self.send(cancel.instance_id, cancel)

    async def keepalive(self, interval: float) -> None:
        """Sends a heartbeat on every agent stream that has been quiet both ways for 1.5
        `interval`s: one sweep for all sessions instead of a timer per session. Agents beat
        every `interval`, so a fleet of healthy agents gets no beats from the server at all."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 4)
            self.beat_quiet_sessions(loop.time(), 1.5 * interval)

    def beat_quiet_sessions(self, now: float, quiet_seconds: float) -> int:
        """Sends a Beat to each session with no traffic since `now - quiet_seconds`; returns
        how many."""
        beaten = 0
        for session in list(self._sessions.values()):
            if session.last_activity <= now - quiet_seconds:
                session.last_activity = now  # one beat per quiet period
                session.send(Beat())
                beaten += 1
        return beaten

    def drain(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            session.send(Drain(reason))


def log_ended(ended: list[RecordEnded]) -> None:
    """One line per record that reached a final state, whoever ended it (its agent's report,
    a deadline), with every id a log search may start from."""
    for record in ended:
        log.info(
            "record ended: %s",
            record.state,
            extra=about(
                invoke_id=record.invoke_id,
                instance_id=record.instance_id,
                record_id=record.record_id,
                state=record.state,
                exit_code=record.exit_code,
                error_code=record.error_code,
            ),
        )
