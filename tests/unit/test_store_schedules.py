"""Scheduled fires of periodic invocations (server/store/schedules.fire_due), real SQLite."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudassist.server.domain.errors import FailedPrecondition
from cloudassist.server.domain.model import CommandSpec, CommandType, InvocationSpec, RepeatMode
from cloudassist.server.domain.reports import Effects, TaskStart
from cloudassist.server.domain.schedule import Schedule, parse_frequency
from cloudassist.server.domain.status import ExecutionState, InvokeStatus
from cloudassist.server.domain.tasks import EndKind, TaskEnd
from cloudassist.server.store import commands, invocations
from cloudassist.server.store.invocation_changes import stop_invocation
from cloudassist.server.store.invocations import InvocationPlan
from cloudassist.server.store.reports import apply_reports
from cloudassist.server.store.schedules import FirePolicy, fire_due
from cloudassist.server.store.tables import INVOCATION_INSTANCES, INVOCATIONS, RECORDS
from tests.unit.tenancy import REGION, Tenant, new_engine, new_tenant

# Tuesday 2026-03-10 09:07:13 UTC.
NOW = int(datetime(2026, 3, 10, 9, 7, 13, tzinfo=UTC).timestamp() * 1000)
TIMEOUT_S = 30
MINUTE_MS = 60_000
GRACE_MS = 2_000
DELIVERY_MS = 30_000
OUTPUT_LIMIT = 4096
INVOKE_ID = "t-sched"
PAIR = ("i-1", "i-2")


@pytest.fixture
def tenant(tmp_path: Path) -> Iterator[Tenant]:
    """An account whose instances i-1 and i-2 are registered (their agents not yet connected)."""
    engine = new_engine(tmp_path)
    tenant = new_tenant(engine, "acme", NOW - MINUTE_MS)
    for instance_id in PAIR:
        tenant.register(instance_id, NOW - MINUTE_MS)
    yield tenant
    engine.dispose()


def schedule_for(frequency: str, timeout_seconds: int, created_ms: int) -> Schedule:
    return parse_frequency(frequency, UTC, created_ms, timeout_seconds)


def policy() -> FirePolicy:
    counter = itertools.count(1)
    return FirePolicy(
        late_grace_ms=GRACE_MS,
        delivery_timeout_ms=DELIVERY_MS,
        output_limit=OUTPUT_LIMIT,
        schedule_for=schedule_for,
        # Record ids grow with time, as the real ones do.
        new_record_id=lambda: f"r-{next(counter):04d}",
    )


def make_periodic(
    tenant: Tenant,
    frequency: str = "rate(1m)",
    instance_ids: tuple[str, ...] = PAIR,
    invoke_id: str = INVOKE_ID,
) -> Schedule:
    """Connects the instances' agents, stores command c-1 and a periodic invocation made at NOW."""
    for instance_id in instance_ids:
        tenant.hello(instance_id, NOW)
    schedule = schedule_for(frequency, TIMEOUT_S, NOW)
    spec = InvocationSpec(
        region_id=REGION,
        command_id="c-1",
        command_name="tick",
        command_type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo tick",
        enable_parameter=False,
        parameters={},
        instance_ids=instance_ids,
        repeat_mode=RepeatMode.PERIOD,
        frequency=frequency,
        timeout_seconds=TIMEOUT_S,
        working_dir="",
        username="",
    )
    with tenant.engine.begin() as conn:
        commands.create_command(
            conn,
            tenant.account_id,
            "c-1",
            CommandSpec(
                region_id=REGION,
                name="tick",
                type=CommandType.RUN_SHELL_SCRIPT,
                content=b"echo tick",
                description="",
                working_dir="",
                timeout_seconds=TIMEOUT_S,
                enable_parameter=False,
                parameter_names=(),
            ),
            NOW,
            100,
            None,
        )
        _, effects = invocations.create_invocation(
            conn,
            InvocationPlan(
                account_id=tenant.account_id,
                invoke_id=invoke_id,
                spec=spec,
                record_ids={},
                now_ms=NOW,
                day_start_ms=NOW - 3_600_000,
                daily_quota=100,
                delivery_deadline_ms=NOW + DELIVERY_MS,
                output_limit=OUTPUT_LIMIT,
                idempotency=None,
                one_shot=schedule.one_shot,
                next_fire_ms=schedule.first_fire(NOW),
            ),
        )
    assert effects.dispatches == []
    return schedule


def fire(tenant: Tenant, now_ms: int, fire_policy: FirePolicy) -> Effects:
    with tenant.engine.begin() as conn:
        return fire_due(conn, now_ms, fire_policy)


def next_fire(tenant: Tenant, invoke_id: str = INVOKE_ID) -> int | None:
    with tenant.engine.connect() as conn:
        value: int | None = conn.execute(
            select(INVOCATIONS.c.next_fire_ms).where(INVOCATIONS.c.invoke_id == invoke_id)
        ).scalar_one()
    return value


def records(tenant: Tenant, invoke_id: str = INVOKE_ID) -> list[Any]:
    with tenant.engine.connect() as conn:
        return list(
            conn.execute(
                select(RECORDS)
                .where(RECORDS.c.invoke_id == invoke_id)
                .order_by(RECORDS.c.record_id)
            ).all()
        )


def members(tenant: Tenant, invoke_id: str = INVOKE_ID) -> dict[str, Any]:
    with tenant.engine.connect() as conn:
        rows = conn.execute(
            select(INVOCATION_INSTANCES).where(INVOCATION_INSTANCES.c.invoke_id == invoke_id)
        ).all()
    return {row.instance_id: row for row in rows}


def status(tenant: Tenant, invoke_id: str = INVOKE_ID) -> InvokeStatus:
    with tenant.engine.connect() as conn:
        return invocations.get_invocation(conn, tenant.account_id, REGION, invoke_id).status


def stop(tenant: Tenant, instance_ids: list[str], now_ms: int) -> Effects:
    with tenant.engine.begin() as conn:
        return stop_invocation(
            conn, tenant.account_id, REGION, INVOKE_ID, instance_ids, now_ms, now_ms + 10_000
        )


def run(tenant: Tenant, record_id: str, instance_id: str, at: int, end: bool = True) -> None:
    """The agent starts the record at `at` and (when `end`) finishes it 1 s later."""
    reports: list[Any] = [TaskStart(record_id, instance_id, at)]
    if end:
        reports.append(
            TaskEnd(
                record_id=record_id,
                instance_id=instance_id,
                kind=EndKind.FINISHED,
                exit_code=0,
                output_size=0,
                time_ms=at + 1_000,
                start_ms=at,
            )
        )
    with tenant.engine.begin() as conn:
        effects = apply_reports(conn, reports, at + 1_000)
    assert effects.rejected == []


# --- a periodic invocation fires at its time ---


def test_periodic_invocation_has_no_records_before_its_first_fire(tenant: Tenant) -> None:
    make_periodic(tenant)
    assert records(tenant) == []
    assert next_fire(tenant) == NOW
    effects = fire(tenant, NOW - 1, policy())
    assert effects.dispatches == []
    assert records(tenant) == []
    assert next_fire(tenant) == NOW


def test_due_fire_makes_one_pending_record_per_instance_and_dispatches_them(
    tenant: Tenant,
) -> None:
    make_periodic(tenant)
    effects = fire(tenant, NOW, policy())
    rows = records(tenant)
    assert [(r.instance_id, r.state, r.repeats) for r in rows] == [
        ("i-1", ExecutionState.PENDING, 1),
        ("i-2", ExecutionState.PENDING, 1),
    ]
    assert all(r.created_ms == NOW and r.deadline_ms == NOW + DELIVERY_MS for r in rows)
    assert all(r.output_limit == OUTPUT_LIMIT for r in rows)
    assert sorted((t.instance_id, t.task_id, t.invoke_id) for t in effects.dispatches) == [
        (r.instance_id, r.record_id, INVOKE_ID) for r in rows
    ]
    assert effects.changed_invocations == {INVOKE_ID}
    assert {i: (m.latest_record_id, m.repeats) for i, m in members(tenant).items()} == {
        r.instance_id: (r.record_id, 1) for r in rows
    }
    assert status(tenant) is InvokeStatus.RUNNING


def test_fire_moves_next_fire_to_the_next_slot(tenant: Tenant) -> None:
    make_periodic(tenant, frequency="rate(1m)")
    fire(tenant, NOW, policy())
    assert next_fire(tenant) == NOW + MINUTE_MS


def test_cron_fire_moves_next_fire_to_the_next_cron_slot(tenant: Tenant) -> None:
    schedule = make_periodic(tenant, frequency="0 */20 * * * ?")
    first = schedule.first_fire(NOW)
    assert next_fire(tenant) == first == NOW + (12 * 60 + 47) * 1000  # 09:20:00
    fire(tenant, first + 300, policy())
    assert len(records(tenant)) == 2
    assert next_fire(tenant) == first + 20 * MINUTE_MS


def test_a_fire_is_claimed_once(tenant: Tenant) -> None:
    make_periodic(tenant)
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    # Both runs end at once, so only the claim keeps the same slot from firing again.
    for row in records(tenant):
        run(tenant, row.record_id, row.instance_id, NOW)
    again = fire(tenant, NOW, fire_policy)
    assert again.dispatches == []
    assert again.changed_invocations == set()
    assert len(records(tenant)) == 2
    assert next_fire(tenant) == NOW + MINUTE_MS


def test_each_fire_adds_a_record_and_counts_repeats(tenant: Tenant) -> None:
    make_periodic(tenant, instance_ids=("i-1",))
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    run(tenant, records(tenant)[0].record_id, "i-1", NOW + 100)
    effects = fire(tenant, NOW + MINUTE_MS, fire_policy)
    rows = records(tenant)
    assert [(r.state, r.repeats) for r in rows] == [
        (ExecutionState.SUCCESS, 1),
        (ExecutionState.PENDING, 2),
    ]
    assert [t.task_id for t in effects.dispatches] == [rows[1].record_id]
    member = members(tenant)["i-1"]
    assert (member.latest_record_id, member.repeats) == (rows[1].record_id, 2)
    assert next_fire(tenant) == NOW + 2 * MINUTE_MS


def test_periodic_invocation_stays_running_between_fires(tenant: Tenant) -> None:
    make_periodic(tenant, instance_ids=("i-1",))
    fire(tenant, NOW, policy())
    run(tenant, records(tenant)[0].record_id, "i-1", NOW + 100)
    assert status(tenant) is InvokeStatus.RUNNING
    assert members(tenant)["i-1"].state == ExecutionState.SUCCESS


def test_an_instance_still_running_its_previous_fire_is_skipped(tenant: Tenant) -> None:
    make_periodic(tenant)
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    first = {r.instance_id: r.record_id for r in records(tenant)}
    run(tenant, first["i-1"], "i-1", NOW + 100, end=False)  # still RUNNING
    run(tenant, first["i-2"], "i-2", NOW + 100)  # SUCCESS
    effects = fire(tenant, NOW + MINUTE_MS, fire_policy)
    assert [t.instance_id for t in effects.dispatches] == ["i-2"]
    new = [r for r in records(tenant) if r.record_id not in first.values()]
    assert [(r.instance_id, r.repeats) for r in new] == [("i-2", 2)]
    assert members(tenant)["i-1"].latest_record_id == first["i-1"]
    assert members(tenant)["i-1"].repeats == 1
    assert next_fire(tenant) == NOW + 2 * MINUTE_MS


def test_an_instance_still_pending_from_its_previous_fire_is_skipped(tenant: Tenant) -> None:
    make_periodic(tenant, instance_ids=("i-1",))
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    effects = fire(tenant, NOW + MINUTE_MS, fire_policy)
    assert effects.dispatches == []
    assert len(records(tenant)) == 1
    assert next_fire(tenant) == NOW + 2 * MINUTE_MS


# --- stopping ---


def test_a_stopped_instance_gets_no_more_records(tenant: Tenant) -> None:
    make_periodic(tenant)
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    stop(tenant, ["i-2"], NOW + 1_000)
    first = {r.record_id for r in records(tenant)}
    effects = fire(tenant, NOW + MINUTE_MS, fire_policy)
    # i-1's first record is still PENDING, i-2 is stopped: nothing to fire yet.
    assert effects.dispatches == []
    run(tenant, records(tenant)[0].record_id, "i-1", NOW + MINUTE_MS + 100)
    effects = fire(tenant, NOW + 2 * MINUTE_MS, fire_policy)
    assert [t.instance_id for t in effects.dispatches] == ["i-1"]
    new = [r for r in records(tenant) if r.record_id not in first]
    assert [r.instance_id for r in new] == ["i-1"]
    assert members(tenant)["i-2"].stopped
    assert next_fire(tenant) == NOW + 3 * MINUTE_MS


def test_when_every_instance_is_stopped_next_fire_becomes_null(tenant: Tenant) -> None:
    make_periodic(tenant)
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    stop(tenant, ["i-1"], NOW + 1_000)
    assert next_fire(tenant) == NOW + MINUTE_MS
    stop(tenant, ["i-2"], NOW + 2_000)
    assert next_fire(tenant) is None
    assert status(tenant) is InvokeStatus.STOPPED
    effects = fire(tenant, NOW + 10 * MINUTE_MS, fire_policy)
    assert effects.dispatches == []
    assert len(records(tenant)) == 2


def test_stopping_before_the_first_fire_leaves_nothing_to_fire(tenant: Tenant) -> None:
    make_periodic(tenant, frequency="0 */20 * * * ?")
    stop(tenant, [], NOW + 1_000)
    assert next_fire(tenant) is None
    assert status(tenant) is InvokeStatus.STOPPED
    assert fire(tenant, NOW + 3_600_000, policy()).dispatches == []
    assert records(tenant) == []


# --- missed fires ---


def test_a_fire_found_later_than_the_grace_is_skipped(tenant: Tenant) -> None:
    make_periodic(tenant)
    late = NOW + GRACE_MS + 1
    effects = fire(tenant, late, policy())
    assert effects.dispatches == []
    assert records(tenant) == []
    assert next_fire(tenant) == NOW + MINUTE_MS


def test_a_fire_within_the_grace_runs(tenant: Tenant) -> None:
    make_periodic(tenant)
    effects = fire(tenant, NOW + GRACE_MS, policy())
    assert len(effects.dispatches) == 2
    assert all(r.created_ms == NOW + GRACE_MS for r in records(tenant))


def test_after_a_long_outage_next_fire_moves_past_now_without_replaying(tenant: Tenant) -> None:
    make_periodic(tenant)
    fire_policy = policy()
    fire(tenant, NOW, fire_policy)
    for row in records(tenant):
        run(tenant, row.record_id, row.instance_id, NOW + 100)
    back = NOW + 10 * MINUTE_MS + 5_000  # ten slots missed
    effects = fire(tenant, back, fire_policy)
    assert effects.dispatches == []
    assert len(records(tenant)) == 2
    following = next_fire(tenant)
    assert following == NOW + 11 * MINUTE_MS
    assert following > back


def test_a_late_cron_fire_moves_to_the_next_cron_slot_after_now(tenant: Tenant) -> None:
    schedule = make_periodic(tenant, frequency="0 */20 * * * ?")
    first = schedule.first_fire(NOW)
    assert first is not None
    back = first + 45 * MINUTE_MS  # 10:05, slots 09:20, 09:40 and 10:00 missed
    fire(tenant, back, policy())
    assert records(tenant) == []
    assert next_fire(tenant) == first + 60 * MINUTE_MS  # 10:20


# --- at(): one fire ---


AT = int(datetime(2026, 3, 10, 10, 0, tzinfo=UTC).timestamp() * 1000)


def test_at_invocation_fires_once_then_has_no_next_fire(tenant: Tenant) -> None:
    schedule = make_periodic(tenant, frequency="at(2026-03-10 10:00:00)")
    assert schedule.one_shot
    assert next_fire(tenant) == AT
    with tenant.engine.connect() as conn:
        assert conn.execute(select(INVOCATIONS.c.one_shot)).scalar_one()
    fire_policy = policy()
    assert fire(tenant, AT - 1, fire_policy).dispatches == []
    effects = fire(tenant, AT, fire_policy)
    assert sorted(t.instance_id for t in effects.dispatches) == list(PAIR)
    assert next_fire(tenant) is None
    assert fire(tenant, AT + 10 * MINUTE_MS, fire_policy).dispatches == []
    assert len(records(tenant)) == 2


def test_at_invocation_aggregates_like_a_one_shot_once_its_records_end(tenant: Tenant) -> None:
    make_periodic(tenant, frequency="at(2026-03-10 10:00:00)")
    fire(tenant, AT, policy())
    rids = {r.instance_id: r.record_id for r in records(tenant)}
    run(tenant, rids["i-1"], "i-1", AT + 100)
    assert status(tenant) is InvokeStatus.RUNNING
    run(tenant, rids["i-2"], "i-2", AT + 200)
    assert status(tenant) is InvokeStatus.FINISHED
    assert {i: (m.state, m.status) for i, m in members(tenant).items()} == {
        "i-1": (ExecutionState.SUCCESS, InvokeStatus.FINISHED),
        "i-2": (ExecutionState.SUCCESS, InvokeStatus.FINISHED),
    }
    with pytest.raises(FailedPrecondition):
        stop(tenant, [], AT + 5_000)


def test_a_missed_at_fire_does_not_leave_the_invocation_running(tenant: Tenant) -> None:
    # The only fire of an at() schedule is skipped (the server was down at that time): no
    # record will ever exist and nothing can be stopped, so the invocation must not stay
    # Running forever.
    make_periodic(tenant, frequency="at(2026-03-10 10:00:00)")
    fire(tenant, AT + GRACE_MS + 1, policy())
    assert records(tenant) == []
    assert next_fire(tenant) is None
    with pytest.raises(FailedPrecondition):
        stop(tenant, [], AT + GRACE_MS + 2)
    assert status(tenant) is not InvokeStatus.RUNNING
