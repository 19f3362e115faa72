"""The hub's keepalive: a beat only on agent streams quiet in both directions."""

from __future__ import annotations

from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import AgentSession, Beat, Hub


async def test_only_streams_quiet_both_ways_get_a_beat() -> None:
    hub = Hub(InvocationEvents())
    quiet, chatty = AgentSession("i-quiet"), AgentSession("i-chatty")
    hub.attach(quiet)
    hub.attach(chatty)
    now = quiet.last_activity + 100.0
    chatty.last_activity = now - 5.0  # the agent sent a heartbeat 5 s ago
    assert hub.beat_quiet_sessions(now, quiet_seconds=30.0) == 1
    assert isinstance(quiet.queue.get_nowait(), Beat)
    assert chatty.queue.empty()


async def test_a_beat_restarts_the_quiet_period() -> None:
    hub = Hub(InvocationEvents())
    session = AgentSession("i-1")
    hub.attach(session)
    now = session.last_activity + 31.0
    assert hub.beat_quiet_sessions(now, quiet_seconds=30.0) == 1
    assert hub.beat_quiet_sessions(now + 29.0, quiet_seconds=30.0) == 0
    assert hub.beat_quiet_sessions(now + 30.0, quiet_seconds=30.0) == 1
    assert session.queue.qsize() == 2
