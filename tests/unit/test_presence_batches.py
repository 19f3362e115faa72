"""Hellos and goodbyes stored in batches: the same outcome as one transaction each, in order,
fewer transactions when they wait together, and one's failure kept to itself (real SQLite)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.errors import Unauthenticated
from cloudassist.server.domain.model import OsType
from cloudassist.server.domain.reports import TaskStart
from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.fleet.recorder import Recorder
from cloudassist.server.planes import presence
from cloudassist.server.planes.presence import PresenceBatches
from cloudassist.server.store.database import Database
from cloudassist.server.store.hello import Goodbye, Hello, agent_hello, presence_changes
from cloudassist.server.store.reports import apply_reports
from cloudassist.server.store.tables import INSTANCE_TAGS, INSTANCES, INVOCATION_INSTANCES, RECORDS
from tests.unit import test_store
from tests.unit.tenancy import Tenant, new_engine, new_tenant

NOW = test_store.NOW
INSTANCES_HERE = ("i-1", "i-2", "i-3", "i-4")
RECORD_2 = f"r-{test_store.INVOKE_ID}-i-2"


def _fleet(directory: Path) -> Tenant:
    """i-1 runs a record its agent no longer holds, i-2 has one waiting for delivery, i-3 runs
    one its agent holds, i-4 has nothing."""
    directory.mkdir()
    engine = new_engine(directory)
    tenant = new_tenant(engine, "acme", NOW - 10_000)
    for instance_id in INSTANCES_HERE:
        tenant.register(instance_id, NOW - 10_000)
    records = test_store.invoke(tenant, ("i-1", "i-2", "i-3"))
    with engine.begin() as conn:
        apply_reports(
            conn,
            [
                TaskStart(records["i-1"], "i-1", NOW + 100),
                TaskStart(records["i-3"], "i-3", NOW + 100),
            ],
            NOW + 200,
        )
    return tenant


def _hellos(tenant: Tenant) -> list[Hello]:
    records = {i: f"r-{test_store.INVOKE_ID}-{i}" for i in INSTANCES_HERE}

    def identity(instance_id: str, secret: str | None = None) -> AgentIdentity:
        return AgentIdentity(
            instance_id,
            tenant.secrets.get(instance_id, "x") if secret is None else secret,
            OsType.LINUX,
            f"host-{instance_id}",
            "2.0",
            tags={"role": f"web-{instance_id}", "zone": "ä"},
        )

    return [
        Hello(identity("i-1")),
        Hello(identity("i-2")),
        Hello(identity("i-3"), (HeldTask(records["i-3"], 0, False), HeldTask("r-gone", 3, False))),
        Hello(identity("i-4", secret="wrong")),
        Hello(identity("i-unknown")),
    ]


def _state(engine: Engine) -> dict[str, list[Any]]:
    """What the hellos write, minus what differs by construction (ids, secrets)."""
    with engine.connect() as conn:
        return {
            "instances": conn.execute(
                select(
                    INSTANCES.c.instance_id,
                    INSTANCES.c.online,
                    INSTANCES.c.hostname,
                    INSTANCES.c.agent_version,
                    INSTANCES.c.last_heartbeat_ms,
                ).order_by(INSTANCES.c.instance_id)
            ).all(),
            "records": conn.execute(
                select(
                    RECORDS.c.instance_id,
                    RECORDS.c.state,
                    RECORDS.c.error_code,
                    RECORDS.c.finish_ms,
                ).order_by(RECORDS.c.instance_id)
            ).all(),
            "members": conn.execute(
                select(INVOCATION_INSTANCES.c.instance_id, INVOCATION_INSTANCES.c.state).order_by(
                    INVOCATION_INSTANCES.c.instance_id
                )
            ).all(),
            "tags": conn.execute(
                select(
                    INSTANCE_TAGS.c.instance_id, INSTANCE_TAGS.c.key, INSTANCE_TAGS.c.value
                ).order_by(INSTANCE_TAGS.c.instance_id, INSTANCE_TAGS.c.key)
            ).all(),
        }


def _outcome(result: Any) -> Any:
    if isinstance(result, Unauthenticated):
        return ("refused", result.reason, result.message)
    effects, acks = result
    return (
        [(t.task_id, t.instance_id) for t in effects.dispatches],
        effects.cancels,
        sorted(effects.changed_invocations),
        acks,
    )


def test_a_batch_stores_what_one_transaction_per_hello_stores(tmp_path: Path) -> None:
    alone, together = _fleet(tmp_path / "alone"), _fleet(tmp_path / "together")
    one_by_one: list[Any] = []
    for hello in _hellos(alone):
        try:
            with alone.engine.begin() as conn:
                one_by_one.append(agent_hello(conn, hello.agent, hello.held, NOW + 1_000, "s-1"))
        except Unauthenticated as refused:
            one_by_one.append(refused)
    with together.engine.begin() as conn:
        batched = presence_changes(conn, _hellos(together), NOW + 1_000, "s-1")

    assert [_outcome(r) for r in batched] == [_outcome(r) for r in one_by_one]
    assert _state(together.engine) == _state(alone.engine)
    # And what that is: i-1's lost record ended, i-2's is sent, i-3's kept, the rest refused.
    records = _state(together.engine)["records"]
    assert [(r.instance_id, r.state, r.error_code) for r in records] == [
        ("i-1", "ERROR", reasons.CLIENT_RESTARTED),
        ("i-2", "PENDING", ""),
        ("i-3", "RUNNING", ""),
    ]
    outcomes = [_outcome(r) for r in batched]
    assert outcomes[1][0] == [(RECORD_2, "i-2")]
    assert outcomes[2][3] == [(f"r-{test_store.INVOKE_ID}-i-3", 0, False), ("r-gone", 3, True)]
    assert [o[0] for o in outcomes[3:]] == ["refused", "refused"]
    assert "'i-4'" in outcomes[3][2]
    assert "'i-unknown'" in outcomes[4][2]


def test_changes_of_one_instance_in_a_batch_apply_in_order(tmp_path: Path) -> None:
    tenant = _fleet(tmp_path / "fleet")
    hello = _hellos(tenant)[1]  # i-2, with a record waiting for delivery
    with tenant.engine.begin() as conn:
        outcomes = presence_changes(
            conn, [hello, Goodbye("i-2"), hello, Goodbye("i-1")], NOW + 1_000, "s-1"
        )
    # Each hello sends the waiting record (it stays PENDING until the agent takes it).
    assert [_outcome(o)[0] for o in (outcomes[0], outcomes[2])] == [[(RECORD_2, "i-2")]] * 2
    assert outcomes[1::2] == [None, None]
    online = {r.instance_id: r.online for r in _state(tenant.engine)["instances"]}
    # i-1 said hello through another server (none): this server's goodbye leaves it alone.
    assert online == {"i-1": True, "i-2": True, "i-3": True, "i-4": False}
    with tenant.engine.begin() as conn:
        presence_changes(conn, [hello, Goodbye("i-2")], NOW + 2_000, "s-1")
    online = {r.instance_id: r.online for r in _state(tenant.engine)["instances"]}
    assert online["i-2"] is False


@pytest.fixture
async def batches(tmp_path: Path) -> AsyncIterator[tuple[Tenant, PresenceBatches]]:
    tenant = _fleet(tmp_path / "fleet")
    db = Database(tenant.engine)
    hub = Hub(InvocationEvents())
    try:
        yield tenant, PresenceBatches(db, Recorder(db, hub), "s-1")
    finally:
        db.close()


async def _store_all(batcher: PresenceBatches, hellos: Sequence[Hello]) -> list[Any]:
    return await asyncio.gather(*(batcher.hello(h) for h in hellos), return_exceptions=True)


async def test_hellos_that_wait_together_share_a_transaction(
    batches: tuple[Tenant, PresenceBatches],
) -> None:
    tenant, batcher = batches
    results = await _store_all(batcher, _hellos(tenant))
    assert (batcher.batches, batcher.changes) == (1, 5)
    assert [type(r).__name__ for r in results] == ["tuple"] * 3 + ["Unauthenticated"] * 2
    online = dict((r.instance_id, r.online) for r in _state(tenant.engine)["instances"])
    assert online == {"i-1": True, "i-2": True, "i-3": True, "i-4": False}


async def test_a_goodbye_waits_its_turn_behind_a_hello(
    batches: tuple[Tenant, PresenceBatches],
) -> None:
    tenant, batcher = batches
    hello = _hellos(tenant)[1]
    await asyncio.gather(batcher.hello(hello), batcher.goodbye("i-2"))
    assert (batcher.batches, batcher.changes) == (1, 2)
    online = {r.instance_id: r.online for r in _state(tenant.engine)["instances"]}
    assert online["i-2"] is False


async def test_a_batch_that_fails_is_stored_hello_by_hello(
    batches: tuple[Tenant, PresenceBatches], monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, batcher = batches
    real = presence_changes

    def failing_for_i_3(conn: Connection, hellos: Sequence[Hello], *args: Any) -> Any:
        if any(h.agent.instance_id == "i-3" for h in hellos):
            raise RuntimeError("disk full")
        return real(conn, hellos, *args)

    monkeypatch.setattr(presence, "presence_changes", failing_for_i_3)
    results = await _store_all(batcher, _hellos(tenant)[:3])
    assert isinstance(results[2], RuntimeError)
    assert [_outcome(r)[0] for r in results[:2]] == [[], [(RECORD_2, "i-2")]]
    # The batch, then each of its three alone.
    assert batcher.batches == 4
    # i-3's hello wrote nothing: its heartbeat is still the one of its first hello.
    heard = {r.instance_id: r.last_heartbeat_ms for r in _state(tenant.engine)["instances"]}
    assert heard["i-1"] > NOW
    assert heard["i-2"] > NOW
    assert heard["i-3"] == NOW
