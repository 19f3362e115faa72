"""What grpc.health.v1 says: SERVING for every service while the database answers and the
server is not draining; NOT_SERVING otherwise, so that load balancers and meshes route around
a server that could only fail its calls."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from server.metrics import Metrics
from server.store import stats
from server.store.database import Database

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class HealthReporter:
    def __init__(self, servicer: HealthServicer, services: Sequence[str], metrics: Metrics) -> None:
        self._servicer = servicer
        # "" is the server as a whole; then each service by its full name.
        self._services = ["", *services]
        self._metrics = metrics
        self._database_answers = True
        self._draining = False
        self._serving: bool | None = None

    @property
    def serving(self) -> bool:
        return self._database_answers and not self._draining

    async def _publish(self) -> None:
        serving = self.serving
        if serving == self._serving:
            return
        self._serving = serving
        self._metrics.health_serving.set(1 if serving else 0)
        for name in self._services:
            await self._servicer.set(name, SERVING if serving else NOT_SERVING)

    async def start(self) -> None:
        await self._publish()

    async def drain(self) -> None:
        """NOT_SERVING from now on, for good (the server is stopping)."""
        self._draining = True
        await self._publish()
        await self._servicer.enter_graceful_shutdown()

    async def watch_database(self, db: Database, interval: float) -> None:
        """Pings the database every `interval` seconds; one that fails or takes longer than
        `interval` to answer makes every service NOT_SERVING until a ping succeeds again."""
        while True:
            try:
                await asyncio.wait_for(db.read(stats.ping), interval)
                answers = True
            except Exception as exc:
                answers = False
                if self._database_answers:
                    log.warning("the database does not answer (%s): NOT_SERVING", exc or "timeout")
            if answers and not self._database_answers:
                log.info("the database answers again: SERVING")
            self._database_answers = answers
            await self._publish()
            await asyncio.sleep(interval)
