"""AgentPlane's presence bookkeeping against a real SQLite database.

An agent that goes away during its hello cancels the Connect handler, but the hello's
transaction goes on in the writer thread and marks the instance online. The plane must then
close what that hello opened, or the instance stays online with nobody connected. The
periodic reconciliation catches any other way an instance could be left online here.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.fleet.recorder import Recorder
from cloudassist.server.planes import presence
from cloudassist.server.planes.agents import AgentPlane
from cloudassist.server.store.database import Database
from cloudassist.server.store.hello import agent_hello, presence_changes
from cloudassist.server.store.tables import INSTANCES
from tests.unit.tenancy import Tenant, new_engine, new_tenant

NOW = 1_700_000_000_000
SERVER_ID = "s-1"


class Gate:
    """Holds the hello's transaction open until released, and says when it is held."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[Tenant, Database, Hub, AgentPlane]]:
    engine = new_engine(tmp_path)
    tenant = new_tenant(engine, "acme", NOW)
    tenant.register("i-1", NOW)
    db = Database(engine)
    hub = Hub(InvocationEvents())
    recorder = Recorder(db, hub)
    plane = AgentPlane(db, hub, recorder, SERVER_ID)
    try:
        yield tenant, db, hub, plane
    finally:
        db.close()


def _online(conn: Connection) -> bool:
    return bool(
        conn.execute(select(INSTANCES.c.online).where(INSTANCES.c.instance_id == "i-1")).scalar()
    )


def _gated_hello(gate: Gate) -> Any:
    real = presence_changes

    def hello(conn: Connection, *args: Any) -> Any:
        result = real(conn, *args)  # the instance is online once this commits
        gate.entered.set()
        gate.release.wait(10)
        return result

    return hello


async def _connect_held_in_its_hello(
    tenant: Tenant, plane: AgentPlane, monkeypatch: pytest.MonkeyPatch
) -> tuple[Gate, asyncio.Future[Any]]:
    """A connect of i-1 whose hello has been stored and whose transaction is held open."""
    gate = Gate()
    monkeypatch.setattr(presence, "presence_changes", _gated_hello(gate))
    connecting = asyncio.ensure_future(plane.connect(tenant.identity("i-1"), []))
    await asyncio.to_thread(gate.entered.wait, 10)
    return gate, connecting


async def test_a_connect_cancelled_during_its_hello_leaves_the_instance_offline(
    setup: tuple[Tenant, Database, Hub, AgentPlane], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, db, hub, plane = setup
    gate, connecting = await _connect_held_in_its_hello(tenant, plane, monkeypatch)
    connecting.cancel()  # the agent went away; its hello is still being stored
    gate.release.set()
    with pytest.raises(asyncio.CancelledError):
        await connecting

    assert not hub.is_online("i-1")
    assert not await db.read(_online), "the hello's online mark outlived the cancelled call"


async def test_a_connect_not_cancelled_opens_a_session(
    setup: tuple[Tenant, Database, Hub, AgentPlane],
) -> None:
    tenant, db, hub, plane = setup
    session, acks = await plane.connect(tenant.identity("i-1"), [])
    assert acks == []
    assert hub.is_online("i-1")
    assert await db.read(_online)

    await plane.disconnect(session)
    assert not hub.is_online("i-1")
    assert not await db.read(_online)


def _hello_without_session(tenant: Tenant, server_id: str) -> None:
    """The instance's hello is stored as through `server_id`, with no session opened."""
    with tenant.engine.begin() as conn:
        agent_hello(conn, tenant.identity("i-1"), [], NOW, server_id)


async def test_reconcile_marks_offline_an_instance_online_here_without_a_session(
    setup: tuple[Tenant, Database, Hub, AgentPlane],
) -> None:
    tenant, db, _, plane = setup
    _hello_without_session(tenant, SERVER_ID)
    assert await db.read(_online)
    assert await plane.reconcile_presence() == ["i-1"]
    assert not await db.read(_online)
    assert await plane.reconcile_presence() == []


async def test_reconcile_keeps_connected_instances_and_those_of_other_servers(
    setup: tuple[Tenant, Database, Hub, AgentPlane],
) -> None:
    tenant, db, hub, plane = setup
    _hello_without_session(tenant, "s-2")  # connected to another server
    assert await plane.reconcile_presence() == []
    assert await db.read(_online)

    await plane.connect(tenant.identity("i-1"), [])  # now connected here
    assert await plane.reconcile_presence() == []
    assert hub.is_online("i-1")
    assert await db.read(_online)


async def test_reconcile_keeps_an_instance_whose_hello_is_being_stored(
    setup: tuple[Tenant, Database, Hub, AgentPlane], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, db, hub, plane = setup
    gate, connecting = await _connect_held_in_its_hello(tenant, plane, monkeypatch)
    reconciling = asyncio.ensure_future(plane.reconcile_presence())  # queued behind the hello
    gate.release.set()
    await connecting
    assert await reconciling == []
    assert hub.is_online("i-1")
    assert await db.read(_online)
