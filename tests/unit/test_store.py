"""Repository functions of server/store/ against a real SQLite file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, delete, event, select

from cloudassist.server.domain import reasons
from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.errors import (
    AlreadyExists,
    FailedPrecondition,
    NotFound,
    ResourceExhausted,
    Unauthenticated,
)
from cloudassist.server.domain.model import (
    CommandSpec,
    CommandType,
    InvocationSpec,
    OsType,
    RepeatMode,
)
from cloudassist.server.domain.reports import (
    CancelOrder,
    Effects,
    OutputAck,
    OutputAppend,
    Report,
    TaskStart,
)
from cloudassist.server.domain.status import ExecutionState, InvokeStatus
from cloudassist.server.domain.tasks import EndKind, TaskEnd
from cloudassist.server.store import commands, invocations
from cloudassist.server.store.deadlines import expire_due
from cloudassist.server.store.hello import agent_hello
from cloudassist.server.store.idempotency import IdempotencyKey
from cloudassist.server.store.instances import find_instances, mark_offline
from cloudassist.server.store.invocation_changes import stop_invocation
from cloudassist.server.store.invocations import InvocationPlan
from cloudassist.server.store.output import read_range
from cloudassist.server.store.reports import apply_reports
from cloudassist.server.store.tables import INVOCATION_DAYS, RECORDS
from cloudassist.server.store.watch import watch_snapshot
from tests.unit.tenancy import REGION, Tenant, new_engine, new_tenant

NOW = 1_700_000_000_000
REGISTERED_MS = NOW - 60_000
TIMEOUT_S = 60
DELIVERY_MS = 30_000
INVOKE_ID = "t-1"


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    """An account whose instances i-1 and i-2 are registered (their agents not yet connected)."""
    engine = new_engine(tmp_path)
    tenant = new_tenant(engine, "acme", REGISTERED_MS)
    tenant.register("i-1", REGISTERED_MS)
    tenant.register("i-2", REGISTERED_MS)
    yield tenant
    engine.dispose()


def hello(
    tenant: Tenant,
    instance_id: str,
    now_ms: int = NOW,
    held: Sequence[HeldTask] = (),
    secret: str | None = None,
) -> tuple[Effects, list[tuple[str, int, bool]]]:
    return tenant.hello(instance_id, now_ms, held, secret)


def command_spec(name: str = "hello", content: bytes = b"echo hello") -> CommandSpec:
    return CommandSpec(
        region_id=REGION,
        name=name,
        type=CommandType.RUN_SHELL_SCRIPT,
        content=content,
        description="",
        working_dir="",
        timeout_seconds=TIMEOUT_S,
        enable_parameter=False,
        parameter_names=(),
    )


def invocation_spec(instance_ids: tuple[str, ...]) -> InvocationSpec:
    return InvocationSpec(
        region_id=REGION,
        command_id="c-1",
        command_name="hello",
        command_type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo {{ACS::InstanceId}}",
        enable_parameter=True,
        parameters={},
        instance_ids=instance_ids,
        repeat_mode=RepeatMode.ONCE,
        frequency="",
        timeout_seconds=TIMEOUT_S,
        working_dir="/tmp",
        username="",
    )


def invoke(
    tenant: Tenant,
    instance_ids: tuple[str, ...] = ("i-1",),
    output_limit: int = 1024,
    invoke_id: str = INVOKE_ID,
) -> dict[str, str]:
    """Connects the instances' agents, stores command c-1 and an invocation; returns record ids."""
    for instance_id in instance_ids:
        hello(tenant, instance_id)
    record_ids = {i: f"r-{invoke_id}-{i}" for i in instance_ids}
    with tenant.engine.begin() as conn:
        try:
            commands.get_command(conn, tenant.account_id, REGION, "c-1")
        except NotFound:
            commands.create_command(conn, tenant.account_id, "c-1", command_spec(), NOW, 100, None)
        invocations.create_invocation(
            conn,
            InvocationPlan(
                account_id=tenant.account_id,
                invoke_id=invoke_id,
                spec=invocation_spec(instance_ids),
                record_ids=record_ids,
                now_ms=NOW,
                day_start_ms=NOW - 3_600_000,
                daily_quota=100,
                delivery_deadline_ms=NOW + DELIVERY_MS,
                output_limit=output_limit,
                idempotency=None,
            ),
        )
    return record_ids


def apply(tenant: Tenant, reports: Sequence[Report], now_ms: int = NOW + 1_000) -> Effects:
    with tenant.engine.begin() as conn:
        return apply_reports(conn, list(reports), now_ms)


def record_row(tenant: Tenant, record_id: str) -> Any:
    with tenant.engine.connect() as conn:
        return conn.execute(select(RECORDS).where(RECORDS.c.record_id == record_id)).one()


def output_of(tenant: Tenant, record_id: str) -> bytes:
    with tenant.engine.connect() as conn:
        return read_range(conn, record_id, 0, 1 << 30)


def invocation(tenant: Tenant, invoke_id: str = INVOKE_ID) -> Any:
    with tenant.engine.connect() as conn:
        return invocations.get_invocation(conn, tenant.account_id, REGION, invoke_id)


def start(tenant: Tenant, record_id: str, instance_id: str = "i-1", at: int = NOW + 500) -> None:
    effects = apply(tenant, [TaskStart(record_id, instance_id, at)], now_ms=at)
    assert effects.rejected == []


def finish(record_id: str, output_size: int, **changes: Any) -> TaskEnd:
    values: dict[str, Any] = {
        "record_id": record_id,
        "instance_id": "i-1",
        "kind": EndKind.FINISHED,
        "exit_code": 0,
        "output_size": output_size,
        "time_ms": NOW + 5_000,
        "start_ms": NOW + 500,
    }
    values.update(changes)
    return TaskEnd(**values)


# --- TaskStart ---


def test_new_invocation_has_pending_records_with_a_delivery_deadline(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.PENDING
    assert row.deadline_ms == NOW + DELIVERY_MS
    assert invocation(tenant).status is InvokeStatus.RUNNING


def test_task_start_moves_pending_to_running_and_sets_the_execution_deadline(
    tenant: Tenant,
) -> None:
    rid = invoke(tenant)["i-1"]
    effects = apply(tenant, [TaskStart(rid, "i-1", NOW + 100)], now_ms=NOW + 200)
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.RUNNING
    assert row.start_ms == NOW + 100
    assert row.deadline_ms == NOW + 200 + TIMEOUT_S * 1000
    assert effects.changed_invocations == {INVOKE_ID}
    member = invocation(tenant).instances[0]
    assert member.state is ExecutionState.RUNNING
    assert member.start_ms == NOW + 100


# --- OutputAppend ---


def test_output_at_the_current_length_is_stored(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    effects = apply(tenant, [OutputAppend(rid, "i-1", 0, b"hello ")])
    assert effects.acks == [OutputAck("i-1", rid, 6)]
    effects = apply(tenant, [OutputAppend(rid, "i-1", 6, b"world")])
    assert effects.acks == [OutputAck("i-1", rid, 11)]
    assert output_of(tenant, rid) == b"hello world"
    assert record_row(tenant, rid).output_size == 11


def test_several_chunks_in_one_batch_are_stored_in_order(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    apply(
        tenant,
        [
            OutputAppend(rid, "i-1", 0, b"one "),
            OutputAppend(rid, "i-1", 4, b"two "),
            OutputAppend(rid, "i-1", 8, b"three"),
        ],
    )
    assert output_of(tenant, rid) == b"one two three"
    assert record_row(tenant, rid).output_size == 13


def test_replayed_chunk_is_ignored(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"hello")])
    effects = apply(tenant, [OutputAppend(rid, "i-1", 0, b"hello")])
    assert effects.rejected == []
    assert effects.acks == [OutputAck("i-1", rid, 5)]
    assert output_of(tenant, rid) == b"hello"
    assert record_row(tenant, rid).output_size == 5


def test_replayed_chunk_in_the_same_batch_is_ignored(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    apply(
        tenant,
        [
            OutputAppend(rid, "i-1", 0, b"abc"),
            OutputAppend(rid, "i-1", 0, b"abc"),
            OutputAppend(rid, "i-1", 3, b"def"),
        ],
    )
    assert output_of(tenant, rid) == b"abcdef"


def test_overlapping_chunk_stores_only_the_new_tail(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"hello")])
    effects = apply(tenant, [OutputAppend(rid, "i-1", 3, b"lo world")])
    assert effects.acks == [OutputAck("i-1", rid, 11)]
    assert output_of(tenant, rid) == b"hello world"
    assert record_row(tenant, rid).output_size == 11


def test_chunk_beyond_the_current_length_is_rejected(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"abc")])
    effects = apply(tenant, [OutputAppend(rid, "i-1", 10, b"xyz")])
    assert len(effects.rejected) == 1
    assert rid in effects.rejected[0]
    assert effects.acks == [OutputAck("i-1", rid, 3)]
    assert output_of(tenant, rid) == b"abc"
    assert record_row(tenant, rid).output_size == 3


def test_output_past_the_limit_is_cut_at_the_limit(tenant: Tenant) -> None:
    rid = invoke(tenant, output_limit=8)["i-1"]
    effects = apply(tenant, [OutputAppend(rid, "i-1", 0, b"0123456789abc")])
    assert effects.acks == [OutputAck("i-1", rid, 8)]
    apply(tenant, [OutputAppend(rid, "i-1", 8, b"more")])
    assert output_of(tenant, rid) == b"01234567"
    assert record_row(tenant, rid).output_size == 8


def test_end_with_more_output_than_the_limit_counts_the_rest_as_dropped(tenant: Tenant) -> None:
    rid = invoke(tenant, output_limit=8)["i-1"]
    start(tenant, rid)
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"0123456789abc")])
    effects = apply(tenant, [finish(rid, output_size=20)])
    assert effects.acks == [OutputAck("i-1", rid, 8, result_stored=True)]
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.SUCCESS
    assert row.output_size == 8
    assert row.dropped == 12
    assert output_of(tenant, rid) == b"01234567"


# --- TaskEnd ---


def test_end_before_all_output_is_stored_asks_for_a_rewind(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"abc")])
    effects = apply(tenant, [finish(rid, output_size=10)])
    assert effects.acks == [OutputAck("i-1", rid, 3, rewind=True)]
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.RUNNING
    assert not row.agent_done
    assert row.exit_code is None
    assert row.finish_ms is None
    assert invocation(tenant).status is InvokeStatus.RUNNING


def test_end_after_the_missing_output_arrives_is_stored(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"abc"), finish(rid, output_size=6)])
    assert record_row(tenant, rid).state == ExecutionState.RUNNING
    effects = apply(tenant, [OutputAppend(rid, "i-1", 3, b"def"), finish(rid, output_size=6)])
    assert effects.acks == [OutputAck("i-1", rid, 6, result_stored=True)]
    assert record_row(tenant, rid).state == ExecutionState.SUCCESS
    assert output_of(tenant, rid) == b"abcdef"


def test_end_with_exit_zero_is_success_and_finishes_the_invocation(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    effects = apply(
        tenant,
        [OutputAppend(rid, "i-1", 0, b"hi\n"), finish(rid, output_size=3)],
        now_ms=NOW + 6_000,
    )
    assert effects.acks == [OutputAck("i-1", rid, 3, result_stored=True)]
    assert INVOKE_ID in effects.changed_invocations
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.SUCCESS
    assert row.exit_code == 0
    assert row.error_code == ""
    assert row.agent_done
    assert row.deadline_ms is None
    assert row.finish_ms == NOW + 5_000
    assert row.dropped == 0
    inv = invocation(tenant)
    assert inv.status is InvokeStatus.FINISHED
    [member] = inv.instances
    assert member.instance_id == "i-1"
    assert member.state is ExecutionState.SUCCESS
    assert member.status is InvokeStatus.FINISHED
    assert member.exit_code == 0
    assert member.error_code == ""
    assert member.start_ms == row.start_ms == NOW + 500
    assert member.finish_ms == row.finish_ms
    assert member.updated_ms == NOW + 6_000


def test_end_with_nonzero_exit_is_failed_and_mirrored(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    apply(tenant, [finish(rid, output_size=0, exit_code=3)])
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.FAILED
    assert row.exit_code == 3
    assert row.error_code == reasons.EXIT_CODE_NONZERO
    inv = invocation(tenant)
    assert inv.instances[0].state is ExecutionState.FAILED
    assert inv.instances[0].exit_code == 3
    # "Finished does not mean succeeded."
    assert inv.status is InvokeStatus.FINISHED


def test_second_end_does_not_change_the_stored_result(tenant: Tenant) -> None:
    rid = invoke(tenant, output_limit=4)["i-1"]
    start(tenant, rid)
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"abcdef"), finish(rid, output_size=6)])
    effects = apply(tenant, [finish(rid, output_size=9, exit_code=7, time_ms=NOW + 9_000)])
    assert effects.acks == [OutputAck("i-1", rid, 4, result_stored=True)]
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.SUCCESS
    assert row.exit_code == 0
    assert row.dropped == 2
    assert row.finish_ms == NOW + 5_000


def test_invocation_runs_until_every_instance_finished(tenant: Tenant) -> None:
    rids = invoke(tenant, instance_ids=("i-1", "i-2"))
    start(tenant, rids["i-1"])
    apply(tenant, [finish(rids["i-1"], output_size=0)])
    assert invocation(tenant).status is InvokeStatus.RUNNING
    start(tenant, rids["i-2"], instance_id="i-2")
    apply(tenant, [finish(rids["i-2"], output_size=0, instance_id="i-2", exit_code=1)])
    assert invocation(tenant).status is InvokeStatus.FINISHED


def test_reports_of_many_agents_in_one_batch_are_stored_in_one_go(tenant: Tenant) -> None:
    """The recorder commits what many agents sent together: every start, chunk and end of
    the batch lands, whichever instance it came from, each as if it came alone."""
    tenant.register("i-3", REGISTERED_MS)
    rids = invoke(tenant, instance_ids=("i-1", "i-2", "i-3"))
    effects = apply(
        tenant,
        [
            TaskStart(rids["i-1"], "i-1", NOW + 500),
            TaskStart(rids["i-2"], "i-2", NOW + 600),
            OutputAppend(rids["i-1"], "i-1", 0, b"one\n"),
            OutputAppend(rids["i-2"], "i-2", 0, b"two\n"),
            finish(rids["i-1"], output_size=4),
            finish(rids["i-2"], output_size=4, instance_id="i-2", exit_code=2, start_ms=NOW + 600),
            TaskStart(rids["i-3"], "i-3", NOW + 700),
        ],
        now_ms=NOW + 6_000,
    )
    assert effects.rejected == []
    assert {a.record_id: a for a in effects.acks} == {
        rids["i-1"]: OutputAck("i-1", rids["i-1"], 4, result_stored=True),
        rids["i-2"]: OutputAck("i-2", rids["i-2"], 4, result_stored=True),
    }
    rows = {i: record_row(tenant, rids[i]) for i in rids}
    assert [rows[i].state for i in ("i-1", "i-2", "i-3")] == [
        ExecutionState.SUCCESS,
        ExecutionState.FAILED,
        ExecutionState.RUNNING,
    ]
    assert (rows["i-1"].start_ms, rows["i-2"].start_ms, rows["i-3"].start_ms) == (
        NOW + 500,
        NOW + 600,
        NOW + 700,
    )
    assert rows["i-2"].exit_code == 2
    assert output_of(tenant, rids["i-1"]) == b"one\n"
    assert output_of(tenant, rids["i-2"]) == b"two\n"
    assert invocation(tenant).status is InvokeStatus.RUNNING
    apply(tenant, [finish(rids["i-3"], output_size=0, instance_id="i-3", start_ms=NOW + 700)])
    assert invocation(tenant).status is InvokeStatus.FINISHED


def test_reports_from_another_instance_are_rejected(tenant: Tenant) -> None:
    rids = invoke(tenant, instance_ids=("i-1", "i-2"))
    rid = rids["i-1"]
    effects = apply(
        tenant,
        [
            TaskStart(rid, "i-2", NOW + 100),
            OutputAppend(rid, "i-2", 0, b"forged"),
            finish(rid, output_size=6, instance_id="i-2"),
        ],
    )
    assert len(effects.rejected) == 3
    # Nothing is acknowledged to the record's own agent; the other agent is told only that
    # it may forget the result it sent (it will never be stored).
    assert effects.acks == [OutputAck("i-2", rid, 6, result_stored=True)]
    assert effects.changed_invocations == set()
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.PENDING
    assert row.output_size == 0
    assert not row.agent_done
    assert output_of(tenant, rid) == b""


def test_reports_on_an_unknown_task_are_rejected(tenant: Tenant) -> None:
    invoke(tenant)
    effects = apply(tenant, [OutputAppend("r-nope", "i-1", 0, b"x")])
    assert len(effects.rejected) == 1
    assert effects.acks == []


def test_end_after_the_server_timed_the_record_out_keeps_timeout(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid, at=NOW)
    deadline = record_row(tenant, rid).deadline_ms
    with tenant.engine.begin() as conn:
        expire_due(conn, deadline)
    assert record_row(tenant, rid).state == ExecutionState.TIMEOUT
    effects = apply(
        tenant,
        [OutputAppend(rid, "i-1", 0, b"late"), finish(rid, output_size=4, exit_code=0)],
        now_ms=deadline + 100,
    )
    assert effects.acks == [OutputAck("i-1", rid, 4, result_stored=True)]
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.TIMEOUT
    assert row.error_code == reasons.EXECUTION_TIMEOUT
    assert row.finish_ms == deadline
    assert row.agent_done
    assert output_of(tenant, rid) == b"late"
    inv = invocation(tenant)
    assert inv.instances[0].state is ExecutionState.TIMEOUT
    assert inv.status is InvokeStatus.FAILED


# --- expire_due ---


def test_nothing_expires_before_its_deadline(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    with tenant.engine.begin() as conn:
        effects = expire_due(conn, NOW + DELIVERY_MS - 1)
    assert effects.cancels == []
    assert record_row(tenant, rid).state == ExecutionState.PENDING


def test_pending_past_its_deadline_on_an_offline_instance_is_aborted(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    with tenant.engine.begin() as conn:
        mark_offline(conn, "i-1", "", NOW + 10)
    with tenant.engine.begin() as conn:
        effects = expire_due(conn, NOW + DELIVERY_MS)
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.ABORTED
    assert row.error_code == reasons.CLIENT_NOT_ONLINE
    assert row.deadline_ms is None
    assert row.finish_ms == NOW + DELIVERY_MS
    assert effects.cancels == [CancelOrder("i-1", rid)]
    assert effects.changed_invocations == {INVOKE_ID}
    assert invocation(tenant).status is InvokeStatus.FAILED


def test_pending_past_its_deadline_on_an_online_instance_is_a_delivery_timeout(
    tenant: Tenant,
) -> None:
    rid = invoke(tenant)["i-1"]
    with tenant.engine.begin() as conn:
        expire_due(conn, NOW + DELIVERY_MS)
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.ABORTED
    assert row.error_code == reasons.DELIVERY_TIMEOUT


def test_running_past_its_deadline_times_out_with_a_cancel_order(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid, at=NOW)
    deadline = NOW + TIMEOUT_S * 1000
    with tenant.engine.begin() as conn:
        assert expire_due(conn, deadline - 1).cancels == []
    assert record_row(tenant, rid).state == ExecutionState.RUNNING
    with tenant.engine.begin() as conn:
        effects = expire_due(conn, deadline)
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.TIMEOUT
    assert row.error_code == reasons.EXECUTION_TIMEOUT
    assert row.deadline_ms is None
    assert effects.cancels == [CancelOrder("i-1", rid, timeout=True)]
    member = invocation(tenant).instances[0]
    assert member.state is ExecutionState.TIMEOUT
    assert member.status is InvokeStatus.FAILED


# --- agent_hello ---


def test_registered_instance_is_offline_until_its_agent_says_hello(tenant: Tenant) -> None:
    with tenant.engine.connect() as conn:
        before = find_instances(conn, tenant.account_id, REGION, ["i-1"])["i-1"]
    assert not before.online
    assert before.registered_ms == REGISTERED_MS
    assert before.last_heartbeat_ms is None
    hello(tenant, "i-1", now_ms=NOW + 7)
    with tenant.engine.connect() as conn:
        found = find_instances(conn, tenant.account_id, REGION, ["i-1"])
    instance = found["i-1"]
    assert instance.online
    assert instance.region_id == REGION
    assert instance.os_type is OsType.LINUX
    assert instance.hostname == "host-i-1"
    assert instance.agent_version == "1.0"
    assert instance.registered_ms == REGISTERED_MS
    assert instance.last_heartbeat_ms == NOW + 7


def test_hello_of_an_unregistered_instance_is_unauthenticated_and_creates_nothing(
    tenant: Tenant,
) -> None:
    identity = AgentIdentity("i-new", "any-secret", OsType.LINUX, "host-i-new", "1.0")
    with pytest.raises(Unauthenticated) as caught, tenant.engine.begin() as conn:
        agent_hello(conn, identity, [], NOW)
    assert caught.value.reason == reasons.INVALID_INSTANCE_CREDENTIALS
    with tenant.engine.connect() as conn:
        assert find_instances(conn, tenant.account_id, REGION, ["i-new"]) == {}


def test_hello_with_a_wrong_secret_is_unauthenticated_and_leaves_the_instance_offline(
    tenant: Tenant,
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        hello(tenant, "i-1", secret=tenant.secrets["i-2"])
    assert caught.value.reason == reasons.INVALID_INSTANCE_CREDENTIALS
    with tenant.engine.connect() as conn:
        instance = find_instances(conn, tenant.account_id, REGION, ["i-1"])["i-1"]
    assert not instance.online
    assert instance.last_heartbeat_ms is None


def test_hello_without_a_running_record_marks_it_client_restarted(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    effects, acks = hello(tenant, "i-1", now_ms=NOW + 2_000)
    row = record_row(tenant, rid)
    assert row.state == ExecutionState.ERROR
    assert row.error_code == reasons.CLIENT_RESTARTED
    assert row.finish_ms == NOW + 2_000
    assert row.deadline_ms is None
    assert acks == []
    assert effects.dispatches == []
    assert INVOKE_ID in effects.changed_invocations
    assert invocation(tenant).instances[0].state is ExecutionState.ERROR


def test_hello_that_mentions_a_running_record_keeps_it_running(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    apply(tenant, [OutputAppend(rid, "i-1", 0, b"abc")])
    _, acks = hello(tenant, "i-1", held=[HeldTask(rid, output_size=5, finished=False)])
    assert record_row(tenant, rid).state == ExecutionState.RUNNING
    assert acks == [(rid, 3, False)]


def test_hello_returns_pending_records_for_redispatch(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    effects, _ = hello(tenant, "i-1", now_ms=NOW + 2_000)
    assert len(effects.dispatches) == 1
    task = effects.dispatches[0]
    assert task.instance_id == "i-1"
    assert task.task_id == rid
    assert task.invoke_id == INVOKE_ID
    assert task.script == b"echo i-1"
    assert task.timeout_seconds == TIMEOUT_S
    assert task.output_limit == 1024
    assert record_row(tenant, rid).state == ExecutionState.PENDING


# --- stop_invocation ---


def test_stop_cancels_pending_and_stops_running_records(tenant: Tenant) -> None:
    rids = invoke(tenant, instance_ids=("i-1", "i-2"))
    start(tenant, rids["i-1"])
    with tenant.engine.begin() as conn:
        effects = stop_invocation(
            conn, tenant.account_id, REGION, INVOKE_ID, [], NOW + 3_000, NOW + 9_000
        )
    running = record_row(tenant, rids["i-1"])
    assert running.state == ExecutionState.STOPPING
    assert running.deadline_ms == NOW + 9_000
    pending = record_row(tenant, rids["i-2"])
    assert pending.state == ExecutionState.CANCELLED
    assert pending.stop_ms == NOW + 3_000
    assert pending.deadline_ms is None
    assert sorted(effects.cancels, key=lambda c: c.instance_id) == [
        CancelOrder("i-1", rids["i-1"]),
        CancelOrder("i-2", rids["i-2"]),
    ]
    inv = invocation(tenant)
    assert {m.instance_id: m.state for m in inv.instances} == {
        "i-1": ExecutionState.STOPPING,
        "i-2": ExecutionState.CANCELLED,
    }
    assert inv.status is InvokeStatus.RUNNING


def test_stop_of_one_instance_leaves_the_others(tenant: Tenant) -> None:
    rids = invoke(tenant, instance_ids=("i-1", "i-2"))
    with tenant.engine.begin() as conn:
        stop_invocation(
            conn, tenant.account_id, REGION, INVOKE_ID, ["i-2"], NOW + 3_000, NOW + 9_000
        )
    assert record_row(tenant, rids["i-1"]).state == ExecutionState.PENDING
    assert record_row(tenant, rids["i-2"]).state == ExecutionState.CANCELLED


def test_stop_of_a_finished_invocation_is_a_failed_precondition(tenant: Tenant) -> None:
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    apply(tenant, [finish(rid, output_size=0)])
    with pytest.raises(FailedPrecondition) as caught, tenant.engine.begin() as conn:
        stop_invocation(conn, tenant.account_id, REGION, INVOKE_ID, [], NOW + 9_000, NOW + 19_000)
    assert caught.value.reason == reasons.INVOCATION_NOT_RUNNING
    assert record_row(tenant, rid).state == ExecutionState.SUCCESS


def test_stop_of_an_instance_outside_the_invocation_is_not_found(tenant: Tenant) -> None:
    invoke(tenant)
    with pytest.raises(NotFound) as caught, tenant.engine.begin() as conn:
        stop_invocation(conn, tenant.account_id, REGION, INVOKE_ID, ["i-9"], NOW, NOW)
    assert caught.value.reason == reasons.INSTANCE_NOT_IN_INVOCATION


# --- create_command ---


def _create(
    conn: Connection,
    account_id: str,
    command_id: str,
    key: IdempotencyKey | None,
    quota: int = 100,
) -> str:
    return commands.create_command(conn, account_id, command_id, command_spec(), NOW, quota, key)


def test_same_client_token_and_request_returns_the_first_command(tenant: Tenant) -> None:
    key = IdempotencyKey(tenant.account_id, REGION, "CreateCommand", "token-1", "hash-a")
    with tenant.engine.begin() as conn:
        assert _create(conn, tenant.account_id, "c-first", key) == "c-first"
    with tenant.engine.begin() as conn:
        assert _create(conn, tenant.account_id, "c-second", key) == "c-first"
    with tenant.engine.connect() as conn:
        assert (
            commands.get_command(conn, tenant.account_id, REGION, "c-first").spec == command_spec()
        )
        with pytest.raises(NotFound):
            commands.get_command(conn, tenant.account_id, REGION, "c-second")


def test_same_client_token_with_another_request_is_already_exists(tenant: Tenant) -> None:
    with tenant.engine.begin() as conn:
        _create(
            conn,
            tenant.account_id,
            "c-first",
            IdempotencyKey(tenant.account_id, REGION, "CreateCommand", "token-1", "hash-a"),
        )
    other = IdempotencyKey(tenant.account_id, REGION, "CreateCommand", "token-1", "hash-b")
    with pytest.raises(AlreadyExists) as caught, tenant.engine.begin() as conn:
        _create(conn, tenant.account_id, "c-second", other)
    assert caught.value.reason == reasons.IDEMPOTENT_PARAMETER_MISMATCH
    assert caught.value.field == "client_token"


def test_command_quota_is_enforced(tenant: Tenant) -> None:
    with tenant.engine.begin() as conn:
        _create(conn, tenant.account_id, "c-1", None, quota=2)
        _create(conn, tenant.account_id, "c-2", None, quota=2)
    with pytest.raises(ResourceExhausted) as caught, tenant.engine.begin() as conn:
        _create(conn, tenant.account_id, "c-3", None, quota=2)
    assert caught.value.reason == reasons.CMD_COUNT_EXCEED_QUOTA
    with tenant.engine.connect() as conn, pytest.raises(NotFound):
        commands.get_command(conn, tenant.account_id, REGION, "c-3")


def test_retry_with_a_used_token_is_answered_even_when_the_quota_is_full(tenant: Tenant) -> None:
    key = IdempotencyKey(tenant.account_id, REGION, "CreateCommand", "token-1", "hash-a")
    with tenant.engine.begin() as conn:
        _create(conn, tenant.account_id, "c-1", key, quota=1)
    with tenant.engine.begin() as conn:
        assert _create(conn, tenant.account_id, "c-2", key, quota=1) == "c-1"


def _invoke_today(
    tenant: Tenant, number: int, quota: int, day_start_ms: int, now_ms: int = NOW
) -> None:
    instance_id = "i-1"
    with tenant.engine.begin() as conn:
        invocations.create_invocation(
            conn,
            InvocationPlan(
                account_id=tenant.account_id,
                invoke_id=f"t-quota-{number:03d}",
                spec=invocation_spec((instance_id,)),
                record_ids={instance_id: f"r-quota-{number:03d}"},
                now_ms=now_ms,
                day_start_ms=day_start_ms,
                daily_quota=quota,
                delivery_deadline_ms=now_ms + DELIVERY_MS,
                output_limit=1024,
                idempotency=None,
            ),
        )


def test_the_daily_invocation_quota_holds_exactly_and_starts_again_each_day(
    tenant: Tenant,
) -> None:
    hello(tenant, "i-1")
    day = NOW - 3_600_000
    for number in range(3):
        _invoke_today(tenant, number, quota=3, day_start_ms=day)
    with pytest.raises(ResourceExhausted) as caught:
        _invoke_today(tenant, 3, quota=3, day_start_ms=day)
    assert caught.value.reason == reasons.INVOCATION_EXCEED_QUOTA
    assert "has made 3 invocations today" in caught.value.message
    # A raised quota counts on from the stored count (the refused call counted nothing).
    _invoke_today(tenant, 4, quota=4, day_start_ms=day)
    with pytest.raises(ResourceExhausted):
        _invoke_today(tenant, 5, quota=4, day_start_ms=day)
    # The next day starts from zero.
    next_day = day + 86_400_000
    for number in range(6, 9):
        _invoke_today(tenant, number, quota=3, day_start_ms=next_day, now_ms=next_day + 1)
    with pytest.raises(ResourceExhausted):
        _invoke_today(tenant, 9, quota=3, day_start_ms=next_day, now_ms=next_day + 1)


def test_the_daily_quota_counts_invocations_made_before_the_day_had_its_row(
    tenant: Tenant,
) -> None:
    """A database upgraded during the day (or a server whose time zone changed) has the day's
    invocations but no row counting them: the first invocation counts them."""
    hello(tenant, "i-1")
    day = NOW - 3_600_000
    for number in range(2):
        _invoke_today(tenant, number, quota=3, day_start_ms=day)
    with tenant.engine.begin() as conn:
        conn.execute(delete(INVOCATION_DAYS))
    _invoke_today(tenant, 2, quota=3, day_start_ms=day)
    with pytest.raises(ResourceExhausted):
        _invoke_today(tenant, 3, quota=3, day_start_ms=day)


# --- watch snapshots ---


def test_watch_snapshot_status_matches_its_records_when_they_end_during_the_read(
    tenant: Tenant,
) -> None:
    """The invocation is read first, then its records: a record ending between the two must
    not leave the snapshot saying Running with every record over (the watch would end on a
    last state change that still says Running)."""
    rid = invoke(tenant)["i-1"]
    start(tenant, rid)
    ended = False

    def end_before_the_records_are_read(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        nonlocal ended
        if not ended and "FROM records JOIN invocations" in statement:
            ended = True
            apply(tenant, [finish(rid, output_size=0)], now_ms=NOW + 6_000)

    event.listen(tenant.engine, "before_cursor_execute", end_before_the_records_are_read)
    try:
        with tenant.engine.connect() as conn:
            snapshot = watch_snapshot(conn, tenant.account_id, REGION, INVOKE_ID, "")
    finally:
        event.remove(tenant.engine, "before_cursor_execute", end_before_the_records_are_read)
    assert ended, "the records' statement was not seen"
    [progress] = snapshot.records
    assert progress.record.state is ExecutionState.SUCCESS
    assert snapshot.status is InvokeStatus.FINISHED


def test_watch_snapshot_reads_the_new_output_of_many_records_in_few_statements(
    tenant: Tenant,
) -> None:
    """A watcher of an invocation on many instances: each record's output from the watcher's
    own offset, byte-exact across chunk edges; the records read from their start share one
    statement, the others another."""
    records = invoke(tenant, ("i-1", "i-2"))
    one, two = records["i-1"], records["i-2"]
    apply(
        tenant,
        [
            OutputAppend(one, "i-1", 0, b"alpha "),
            OutputAppend(one, "i-1", 6, b"beta"),
            OutputAppend(two, "i-2", 0, b"gamma"),
        ],
    )
    statements: list[str] = []

    def seen(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    def look(sent: dict[str, int]) -> dict[str, bytes]:
        statements.clear()
        with tenant.engine.connect() as conn:
            snapshot = watch_snapshot(
                conn, tenant.account_id, REGION, INVOKE_ID, "", sent, checked=True
            )
        return {p.record.record_id: p.new_output for p in snapshot.records}

    event.listen(tenant.engine, "before_cursor_execute", seen)
    try:
        assert look({}) == {one: b"alpha beta", two: b"gamma"}
        assert sum("FROM output_chunks" in s for s in statements) == 1
        # checked: the invocation was found by an earlier look, so only records and output
        assert len(statements) == 2
        assert look({one: 3, two: 0}) == {one: b"ha beta", two: b"gamma"}
        assert sum("FROM output_chunks" in s for s in statements) == 2
        assert look({one: 10, two: 2}) == {one: b"", two: b"mma"}
    finally:
        event.remove(tenant.engine, "before_cursor_execute", seen)


def test_a_first_watch_look_still_refuses_an_invocation_of_another_account(
    tenant: Tenant,
) -> None:
    invoke(tenant)
    with tenant.engine.connect() as conn, pytest.raises(NotFound):
        watch_snapshot(conn, "someone-else", REGION, INVOKE_ID, "")


def test_a_watch_of_an_instance_outside_the_invocation_is_not_found(tenant: Tenant) -> None:
    invoke(tenant)
    with tenant.engine.connect() as conn, pytest.raises(NotFound) as caught:
        watch_snapshot(conn, tenant.account_id, REGION, INVOKE_ID, "i-9")
    assert caught.value.reason == reasons.INSTANCE_NOT_IN_INVOCATION
    with tenant.engine.connect() as conn:
        snapshot = watch_snapshot(conn, tenant.account_id, REGION, INVOKE_ID, "i-1")
    assert [p.record.instance_id for p in snapshot.records] == ["i-1"]
