"""Live agent sessions: one per connected instance, each with its queue of messages to send."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from server.domain.tasks import Task
from server.events import InvocationEvents
from server.store.reports import CancelOrder, Effects, OutputAck

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drain:
    """Ask the agent to reconnect elsewhere (this server is shutting down)."""

    reason: str


Outgoing = Task | CancelOrder | OutputAck | Drain

# A session whose agent does not read this many messages is cut; the agent reconnects and
# resumes from what is stored.
MAX_QUEUED = 10_000


class AgentSession:
    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self.queue: asyncio.Queue[Outgoing | None] = asyncio.Queue()
        self.closed = False

    def send(self, item: Outgoing) -> bool:
        if self.closed:
            return False
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
    def __init__(self, events: InvocationEvents) -> None:
        self.events = events
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

    def carry_out(self, effects: Effects) -> None:
        """Sends what a committed store write asks for and wakes the invocation's watchers."""
        for ack in effects.acks:
            self.send(ack.instance_id, ack)
        for cancel in effects.cancels:
            self.send(cancel.instance_id, cancel)
        for instance_id, task in effects.dispatches:
            self.send(instance_id, task)
        for reason in effects.rejected:
            log.warning("ignored agent report: %s", reason)
        self.events.notify(effects.changed_invocations)

    def drain(self, reason: str) -> None:
        for session in list(self._sessions.values()):
            session.send(Drain(reason))
