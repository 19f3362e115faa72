"""Tasks name their instance: what the store releases carries it, the hub sends a task only
to its own instance's session, and a report on another instance's record is refused."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from cloudassist.server.domain.reports import OutputAck
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import EndKind, TaskEnd, build_task
from cloudassist.server.fleet.events import InvocationEvents
from cloudassist.server.fleet.hub import AgentSession, Hub
from cloudassist.server.store import invocations
from cloudassist.server.store.invocations import InvocationPlan
from tests.unit.tenancy import Tenant, new_engine, new_tenant
from tests.unit.test_store import NOW, REGISTERED_MS, apply, hello, invocation_spec, record_row

TARGETS = ("i-c", "i-a", "i-b")  # as a user lists them: not sorted


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    engine = new_engine(tmp_path)
    tenant = new_tenant(engine, "acme", REGISTERED_MS)
    for instance_id in TARGETS:
        tenant.register(instance_id, REGISTERED_MS)
        hello(tenant, instance_id)
    yield tenant
    engine.dispose()


def _plan(tenant: Tenant, max_concurrency: int | None) -> InvocationPlan:
    spec = replace(invocation_spec(TARGETS), max_concurrency=max_concurrency)
    return InvocationPlan(
        account_id=tenant.account_id,
        invoke_id="t-order",
        spec=spec,
        record_ids={i: f"r-{i}" for i in TARGETS},
        now_ms=NOW,
        day_start_ms=NOW - 3_600_000,
        daily_quota=100,
        delivery_deadline_ms=NOW + 30_000,
        output_limit=1024,
        idempotency=None,
    )


def _create(tenant: Tenant, plan: InvocationPlan) -> list[tuple[str, str, bytes]]:
    """(instance, record, script) of each task the new invocation releases at once."""
    with tenant.engine.begin() as conn:
        _, effects = invocations.create_invocation(conn, plan)
    return [(t.instance_id, t.task_id, t.script) for t in effects.dispatches]


@pytest.mark.parametrize("max_concurrency", [1, 2])
def test_released_tasks_name_their_own_instance_whatever_the_order(
    tenant: Tenant, max_concurrency: int
) -> None:
    """The first targets in instance order are released; each task is the record of the
    instance it names, with that instance's id filled in."""
    released = _create(tenant, _plan(tenant, max_concurrency))
    expected = sorted(TARGETS)[:max_concurrency]
    assert released == [(i, f"r-{i}", f"echo {i}".encode()) for i in expected]


def test_without_rate_control_every_target_gets_its_own_task(tenant: Tenant) -> None:
    released = _create(tenant, _plan(tenant, None))
    assert sorted(released) == sorted((i, f"r-{i}", f"echo {i}".encode()) for i in TARGETS)


def test_a_report_on_another_instances_record_is_refused_and_acknowledged(
    tenant: Tenant,
) -> None:
    _create(tenant, _plan(tenant, None))
    intruder = TaskEnd("r-i-a", "i-c", EndKind.FINISHED, exit_code=0, output_size=0, time_ms=NOW)
    effects = apply(tenant, [intruder])
    assert record_row(tenant, "r-i-a").state == ExecutionState.PENDING.value
    (reason,) = effects.rejected
    assert "'i-c'" in reason
    assert "a task of instance 'i-a'" in reason
    # The intruding agent may forget the result; the owner is told nothing.
    assert effects.acks == [OutputAck("i-c", "r-i-a", 0, result_stored=True)]
    assert effects.ended == []


async def test_a_session_never_takes_a_task_of_another_instance() -> None:
    hub = Hub(InvocationEvents())
    session = AgentSession("i-c")
    hub.attach(session)
    task = build_task("r-a", "i-a", "t-1", invocation_spec(TARGETS), 1024)
    assert session.send(task) is True, "handled (refused), not passed on to other servers"
    assert session.queue.empty()
    # Through the hub a task goes to its own instance's session only (here: none).
    assert hub.send(task.instance_id, task) is False
    assert session.queue.empty()
