"""What the agent stream does, without gRPC: connect, report, disconnect."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence

from cloudassist.common.clock import now_ms
from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.model import OsType
from cloudassist.server.domain.reports import Report
from cloudassist.server.fleet.hub import AgentSession, Hub
from cloudassist.server.fleet.recorder import Recorder
from cloudassist.server.planes.presence import PresenceBatches
from cloudassist.server.store.database import Database
from cloudassist.server.store.hello import Hello, pending_tasks
from cloudassist.server.store.instances import mark_stale_offline
from cloudassist.server.store.security import register_instance

log = logging.getLogger(__name__)


class AgentPlane:
    def __init__(self, db: Database, hub: Hub, recorder: Recorder, server_id: str) -> None:
        self._db = db
        self._hub = hub
        self._recorder = recorder
        self._server_id = server_id
        # Instances whose hello is being stored or whose session is not attached yet.
        self._opening: Counter[str] = Counter()
        self.presence = PresenceBatches(db, recorder, server_id)

    async def connect(
        self, agent: AgentIdentity, held: Sequence[HeldTask], protocol: int = 1
    ) -> tuple[AgentSession, list[tuple[str, int, bool]]]:
        """Registers the agent, reconciles the tasks it holds, and opens its session.

        Returns the session (with re-dispatched tasks and cancels already queued) and the
        acknowledgements for its welcome. Safe to cancel: the hello may be stored already by
        then (its thread goes on), so the session it opens is closed and the instance marked
        offline again, instead of staying online with nobody connected.
        """
        opening = asyncio.ensure_future(self._open(agent, held, protocol))
        try:
            return await asyncio.shield(opening)
        except asyncio.CancelledError:
            await asyncio.shield(self._close_when_open(opening))
            raise

    async def _close_when_open(
        self, opening: asyncio.Future[tuple[AgentSession, list[tuple[str, int, bool]]]]
    ) -> None:
        try:
            session, _ = await opening
        except Exception:  # refused or failed: nothing was opened
            return
        await self.disconnect(session)

    async def _open(
        self, agent: AgentIdentity, held: Sequence[HeldTask], protocol: int
    ) -> tuple[AgentSession, list[tuple[str, int, bool]]]:
        self._opening[agent.instance_id] += 1
        try:
            effects, acks = await self.presence.hello(Hello(agent, tuple(held)))
            session = AgentSession(agent.instance_id, protocol)
            self._hub.attach(session)
        finally:
            self._opening[agent.instance_id] -= 1
            if not self._opening[agent.instance_id]:
                del self._opening[agent.instance_id]
        self._hub.carry_out(effects)
        return session, acks

    async def register(
        self, activation_id: str, code: str, instance_id: str, os_type: OsType, hostname: str
    ) -> tuple[str, str, str]:
        """(instance id, instance secret, region id) for a valid activation."""
        return await self._db.write(
            register_instance, activation_id, code, instance_id, os_type, hostname, now_ms()
        )

    def report(self, report: Report) -> None:
        self._recorder.submit(report)

    def report_all(self, reports: Sequence[Report]) -> None:
        self._recorder.submit_all(reports)

    def heartbeat(self, instance_id: str, time_ms: int) -> None:
        self._recorder.heartbeat(instance_id, time_ms)

    async def disconnect(self, session: AgentSession) -> None:
        if self._hub.detach(session):
            await self.presence.goodbye(session.instance_id)

    async def reconcile_presence(self) -> list[str]:
        """Marks offline the instances the database says are connected here but are not (a
        disconnect whose write failed); returns them. Race-free against hellos: the writer
        runs jobs in order, so a hello not counted here is stored after this check."""
        connected = set(self._hub.local_instances()) | set(self._opening)
        stale: list[str] = await self._db.write(
            mark_stale_offline, self._server_id, connected, now_ms()
        )
        for instance_id in stale:
            log.warning(
                "instance %s was marked online here without a session; now offline", instance_id
            )
        return stale

    async def redispatch(self, instance_ids: list[str] | None = None) -> None:
        """Sends the PENDING tasks of agents connected here (all of them when None): another
        server created them, or notifications were missed."""
        local = set(self._hub.local_instances())
        for instance_id in local if instance_ids is None else local.intersection(instance_ids):
            for task in await self._db.read(pending_tasks, instance_id):
                self._hub.send(instance_id, task)
