"""What grpc.health.v1 says.

Each service (`cloudassist.v1.CommandService`, ...) is SERVING while the database answers and
the server is not draining: load balancers and meshes (readiness) route around a server that
could only fail its calls. The empty name, the process as a whole (liveness), is NOT_SERVING
only while draining: restarting a server because its database is down would not bring the
database back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer
from sqlalchemy import Engine

from cloudassist.server.metrics import Metrics
from cloudassist.server.store import stats

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
PROCESS = ""
# Pings in a row that must fail (or not answer within the interval) before NOT_SERVING: one
# slow moment is not an outage.
FAILURES_BEFORE_NOT_SERVING = 2


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _ping(engine: Engine) -> None:
    with engine.connect() as conn:
        stats.ping(conn)


class HealthReporter:
    def __init__(self, servicer: HealthServicer, services: Sequence[str], metrics: Metrics) -> None:
        self._servicer = servicer
        self._services = list(services)
        self._metrics = metrics
        self._database_answers = True
        self._draining = False
        self._published: tuple[bool, bool] | None = None
        # The ping's own thread: API reads queued on the readers' pool cannot delay it, and a
        # ping stuck on a hung database holds only this thread.
        self._pinger = ThreadPoolExecutor(1, thread_name_prefix="health-ping")

    @property
    def serving(self) -> bool:
        """Whether the services are SERVING."""
        return self._database_answers and not self._draining

    async def _publish(self) -> None:
        state = (self.serving, not self._draining)
        if state == self._published:
            return
        self._published = state
        services_up, process_up = state
        self._metrics.health_serving.set(1 if services_up else 0)
        await self._servicer.set(PROCESS, SERVING if process_up else NOT_SERVING)
        for name in self._services:
            await self._servicer.set(name, SERVING if services_up else NOT_SERVING)

    async def start(self) -> None:
        await self._publish()

    async def drain(self) -> None:
        """NOT_SERVING everywhere from now on, for good (the server is stopping)."""
        self._draining = True
        await self._publish()
        await self._servicer.enter_graceful_shutdown()

    async def watch_database(self, engine: Engine, interval: float) -> None:
        """Pings the database every `interval` seconds. FAILURES_BEFORE_NOT_SERVING pings in
        a row that fail, or do not answer within `interval`, make the services NOT_SERVING
        until a ping succeeds again. A ping that has not answered is not repeated meanwhile."""
        failures = 0
        outstanding: asyncio.Future[None] | None = None
        try:
            while True:
                if outstanding is None or outstanding.done():
                    outstanding = asyncio.wrap_future(self._pinger.submit(_ping, engine))
                    # A ping given up on may still fail later: its error is not news then.
                    outstanding.add_done_callback(_retrieve)
                # asyncio.wait, not wait_for: on Python 3.11 wait_for loses a cancellation that
                # comes as the ping ends, and the server's shutdown then waits for this forever.
                await asyncio.wait({outstanding}, timeout=interval)
                try:
                    if not outstanding.done():
                        raise TimeoutError()
                    outstanding.result()
                    failures = 0
                except Exception as exc:
                    failures += 1
                    if failures == FAILURES_BEFORE_NOT_SERVING:
                        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else "timeout"
                        log.warning("the database does not answer (%s): NOT_SERVING", reason)
                answers = failures < FAILURES_BEFORE_NOT_SERVING
                if answers and not self._database_answers:
                    log.info("the database answers again: SERVING")
                self._database_answers = answers
                await self._publish()
                await asyncio.sleep(interval)
        finally:
            self._pinger.shutdown(wait=False, cancel_futures=True)
