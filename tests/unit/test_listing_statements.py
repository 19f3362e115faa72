"""The Describe listings' statements, built once per shape of their filters and reused: each
shape gives its own rows, whichever shapes ran before it (server/store/results.py,
commands.py, statements.py), and the reader threads' kept connections see what was committed
since their last read (server/store/database.py). Real SQLite."""

from __future__ import annotations

import asyncio
import threading

import pytest
from sqlalchemy import Connection, Engine, insert

from cloudassist.server.domain.model import CommandSpec, CommandType, InvocationSpec, RepeatMode
from cloudassist.server.domain.pagination import Page
from cloudassist.server.domain.reports import OutputAppend, TaskStart
from cloudassist.server.domain.status import ExecutionState, InvokeStatus
from cloudassist.server.domain.tasks import EndKind, TaskEnd
from cloudassist.server.store import commands, invocations
from cloudassist.server.store.database import Database
from cloudassist.server.store.invocations import InvocationPlan
from cloudassist.server.store.reports import apply_reports
from cloudassist.server.store.results import RESULT_OUTPUT_TAIL, list_invocations, list_results
from cloudassist.server.store.tables import RECORDS
from tests.unit.tenancy import REGION, Tenant, new_tenant

NOW = 1_700_000_000_000
PAGE = Page(size=50, after_id=None, fingerprint="test")


def page(size: int, after_id: str | None = None) -> Page:
    return Page(size=size, after_id=after_id, fingerprint="test")


@pytest.fixture
def acme(engine: Engine) -> Tenant:
    tenant = new_tenant(engine, "acme", NOW)
    for instance_id in ("i-1", "i-2"):
        tenant.register(instance_id, NOW)
        tenant.hello(instance_id, NOW)
    return tenant


def spec(name: str, command_type: CommandType, tags: dict[str, str]) -> CommandSpec:
    return CommandSpec(
        region_id=REGION,
        name=name,
        type=command_type,
        content=b"echo",
        description="",
        working_dir="",
        timeout_seconds=60,
        enable_parameter=False,
        parameter_names=(),
        tags=tags,
    )


COMMANDS = {
    "c-1": spec("deploy web", CommandType.RUN_SHELL_SCRIPT, {"team": "web", "tier": "1"}),
    "c-2": spec("100%_done", CommandType.RUN_SHELL_SCRIPT, {"team": "db"}),
    "c-3": spec("1000 done", CommandType.RUN_POWERSHELL_SCRIPT, {"team": "web"}),
    "c-4": spec("Deploy DB", CommandType.RUN_SHELL_SCRIPT, {}),
}


@pytest.fixture
def with_commands(acme: Tenant) -> Tenant:
    with acme.engine.begin() as conn:
        for command_id, command in COMMANDS.items():
            commands.create_command(conn, acme.account_id, command_id, command, NOW, 100, None)
    return acme


def command_ids(
    tenant: Tenant,
    *,
    command_id: str = "",
    name: str = "",
    command_type: CommandType | None = None,
    tags: tuple[tuple[str, str], ...] = (),
    at: Page = PAGE,
) -> tuple[list[str], int]:
    with tenant.engine.connect() as conn:
        listed, total = commands.list_commands(
            conn, tenant.account_id, REGION, command_id, name, command_type, at, tags
        )
    return [c.command_id for c in listed], total


def test_each_command_filter_shape_gives_its_own_rows_in_any_order(with_commands: Tenant) -> None:
    cases: list[tuple[dict[str, object], tuple[list[str], int]]] = [
        ({}, (["c-4", "c-3", "c-2", "c-1"], 4)),
        ({"name": "deploy"}, (["c-4", "c-1"], 2)),
        # % and _ are matched as themselves, not as wildcards.
        ({"name": "0%_"}, (["c-2"], 1)),
        ({"name": "100"}, (["c-3", "c-2"], 2)),
        ({"command_type": CommandType.RUN_POWERSHELL_SCRIPT}, (["c-3"], 1)),
        ({"command_id": "c-2"}, (["c-2"], 1)),
        ({"tags": (("team", "web"),)}, (["c-3", "c-1"], 2)),
        ({"tags": (("team", ""),)}, (["c-3", "c-2", "c-1"], 3)),
        ({"tags": (("team", "web"), ("tier", ""))}, (["c-1"], 1)),
        ({"tags": (("team", "db"), ("tier", ""))}, ([], 0)),
        ({"name": "deploy", "command_type": CommandType.RUN_SHELL_SCRIPT}, (["c-4", "c-1"], 2)),
        ({"name": "nothing"}, ([], 0)),
    ]
    # Twice over, forwards then backwards: a shape built for one call serves the next alike.
    for filters, expected in [*cases, *reversed(cases)]:
        assert command_ids(with_commands, **filters) == expected, filters  # type: ignore[arg-type]


def test_command_pages_count_every_match_and_continue_after_the_last_id(
    with_commands: Tenant,
) -> None:
    # One more row than the page is read: its presence means a next page.
    assert command_ids(with_commands, at=page(2)) == (["c-4", "c-3", "c-2"], 4)
    assert command_ids(with_commands, at=page(2, "c-3")) == (["c-2", "c-1"], 4)
    assert command_ids(with_commands, at=page(4)) == (["c-4", "c-3", "c-2", "c-1"], 4)
    assert command_ids(with_commands, name="deploy", at=page(1, "c-4")) == (["c-1"], 2)
    assert command_ids(with_commands, at=page(2, "c-1")) == ([], 4)


def test_listed_commands_carry_their_own_tags(with_commands: Tenant) -> None:
    with with_commands.engine.connect() as conn:
        listed, _ = commands.list_commands(
            conn, with_commands.account_id, REGION, "", "", None, PAGE
        )
    assert {c.command_id: c.spec.tags for c in listed} == {
        command_id: command.tags for command_id, command in COMMANDS.items()
    }


def invoke(tenant: Tenant, invoke_id: str, command_name: str, instance_ids: list[str]) -> None:
    command_id = f"c-{invoke_id}"
    with tenant.engine.begin() as conn:
        commands.create_command(
            conn,
            tenant.account_id,
            command_id,
            spec(command_name, CommandType.RUN_SHELL_SCRIPT, {}),
            NOW,
            100,
            None,
        )
        invocations.create_invocation(
            conn,
            InvocationPlan(
                account_id=tenant.account_id,
                invoke_id=invoke_id,
                spec=InvocationSpec(
                    region_id=REGION,
                    command_id=command_id,
                    command_name=command_name,
                    command_type=CommandType.RUN_SHELL_SCRIPT,
                    content=b"echo",
                    enable_parameter=False,
                    parameters={},
                    instance_ids=tuple(instance_ids),
                    repeat_mode=RepeatMode.ONCE,
                    frequency="",
                    timeout_seconds=60,
                    working_dir="",
                    username="",
                ),
                record_ids={i: f"r-{invoke_id}-{i}" for i in instance_ids},
                now_ms=NOW,
                day_start_ms=NOW - 3_600_000,
                daily_quota=100,
                delivery_deadline_ms=NOW + 30_000,
                output_limit=1 << 20,
                idempotency=None,
            ),
        )


def run(tenant: Tenant, record_id: str, instance_id: str, chunks: list[bytes], code: int) -> None:
    """The record starts, prints `chunks` (one report each) and exits with `code`."""
    reports: list[object] = [TaskStart(record_id, instance_id, NOW + 1_000)]
    offset = 0
    for chunk in chunks:
        reports.append(OutputAppend(record_id, instance_id, offset, chunk))
        offset += len(chunk)
    reports.append(
        TaskEnd(
            record_id=record_id,
            instance_id=instance_id,
            kind=EndKind.FINISHED,
            exit_code=code,
            output_size=offset,
            time_ms=NOW + 2_000,
            start_ms=NOW + 1_000,
        )
    )
    with tenant.engine.begin() as conn:
        effects = apply_reports(conn, reports, NOW + 2_000)  # type: ignore[arg-type]
    assert effects.rejected == []


LONG = bytes(range(256)) * 120  # past the 24 KiB tail


@pytest.fixture
def ran(acme: Tenant) -> Tenant:
    """t-a ran on i-1 (one chunk, exit 0) and i-2 (two chunks, exit 1: FAILED, which is
    FINISHED); t-b on i-2 printed more than the tail in two chunks; t-c is still pending on
    i-1 and printed nothing."""
    invoke(acme, "t-a", "deploy web", ["i-1", "i-2"])
    invoke(acme, "t-b", "backup_db", ["i-2"])
    invoke(acme, "t-c", "deploy db", ["i-1"])
    run(acme, "r-t-a-i-1", "i-1", [b"hello"], 0)
    run(acme, "r-t-a-i-2", "i-2", [b"part one, ", b"part two"], 1)
    run(acme, "r-t-b-i-2", "i-2", [LONG[:20_000], LONG[20_000:]], 0)
    return acme


def invocation_ids(
    tenant: Tenant,
    *,
    invoke_id: str = "",
    command_id: str = "",
    instance_id: str = "",
    status: InvokeStatus | None = None,
    command_name: str = "",
    at: Page = PAGE,
) -> tuple[list[str], int]:
    with tenant.engine.connect() as conn:
        listed, total = list_invocations(
            conn,
            tenant.account_id,
            REGION,
            invoke_id,
            command_id,
            instance_id,
            status,
            at,
            command_name,
        )
    return [i.invoke_id for i in listed], total


def test_each_invocation_filter_shape_gives_its_own_rows_in_any_order(ran: Tenant) -> None:
    cases: list[tuple[dict[str, object], tuple[list[str], int]]] = [
        ({}, (["t-c", "t-b", "t-a"], 3)),
        ({"invoke_id": "t-b"}, (["t-b"], 1)),
        ({"command_id": "c-t-a"}, (["t-a"], 1)),
        ({"instance_id": "i-1"}, (["t-c", "t-a"], 2)),
        ({"instance_id": "i-2", "command_name": "DEPLOY"}, (["t-a"], 1)),
        ({"command_name": "p_d"}, (["t-b"], 1)),
        ({"command_name": "p%d"}, ([], 0)),
        ({"status": InvokeStatus.RUNNING}, (["t-c"], 1)),
        ({"status": InvokeStatus.FINISHED}, (["t-b", "t-a"], 2)),
        ({"status": InvokeStatus.FINISHED, "instance_id": "i-1"}, (["t-a"], 1)),
        ({"status": InvokeStatus.FAILED}, ([], 0)),
    ]
    for filters, expected in [*cases, *reversed(cases)]:
        assert invocation_ids(ran, **filters) == expected, filters  # type: ignore[arg-type]


def test_invocation_pages_and_their_instances(ran: Tenant) -> None:
    assert invocation_ids(ran, at=page(1)) == (["t-c", "t-b"], 3)
    assert invocation_ids(ran, at=page(1, "t-c")) == (["t-b", "t-a"], 3)
    assert invocation_ids(ran, at=page(2, "t-b")) == (["t-a"], 3)
    with ran.engine.connect() as conn:
        listed, _ = list_invocations(conn, ran.account_id, REGION, "", "", "", None, PAGE)
    assert {i.invoke_id: [m.instance_id for m in i.instances] for i in listed} == {
        "t-a": ["i-1", "i-2"],
        "t-b": ["i-2"],
        "t-c": ["i-1"],
    }


def results(
    tenant: Tenant,
    *,
    invoke_id: str = "",
    instance_id: str = "",
    command_id: str = "",
    status: InvokeStatus | None = None,
    include_history: bool = False,
    at: Page = PAGE,
) -> tuple[dict[str, bytes], int]:
    with tenant.engine.connect() as conn:
        listed, total = list_results(
            conn,
            tenant.account_id,
            REGION,
            invoke_id,
            instance_id,
            command_id,
            status,
            include_history,
            at,
        )
    return {record.record_id: tail for record, tail in listed}, total


def test_each_result_filter_shape_gives_its_own_records_and_tails(ran: Tenant) -> None:
    tails = {
        "r-t-c-i-1": b"",
        "r-t-b-i-2": LONG[-RESULT_OUTPUT_TAIL:],
        "r-t-a-i-2": b"part one, part two",
        "r-t-a-i-1": b"hello",
    }
    cases: list[tuple[dict[str, object], tuple[list[str], int]]] = [
        ({}, (["r-t-c-i-1", "r-t-b-i-2", "r-t-a-i-2", "r-t-a-i-1"], 4)),
        ({"invoke_id": "t-a"}, (["r-t-a-i-2", "r-t-a-i-1"], 2)),
        ({"instance_id": "i-2"}, (["r-t-b-i-2", "r-t-a-i-2"], 2)),
        ({"command_id": "c-t-b"}, (["r-t-b-i-2"], 1)),
        # FINISHED stands for two states (SUCCESS and FAILED), FAILED for four.
        ({"status": InvokeStatus.FINISHED}, (["r-t-b-i-2", "r-t-a-i-2", "r-t-a-i-1"], 3)),
        ({"status": InvokeStatus.FAILED}, ([], 0)),
        ({"status": InvokeStatus.RUNNING}, (["r-t-c-i-1"], 1)),
        ({"status": InvokeStatus.STOPPED, "instance_id": "i-1"}, ([], 0)),
        ({"invoke_id": "t-a", "instance_id": "i-1", "include_history": True}, (["r-t-a-i-1"], 1)),
    ]
    for filters, (ids, count) in [*cases, *reversed(cases)]:
        listed, total = results(ran, **filters)  # type: ignore[arg-type]
        assert (list(listed), total) == (ids, count), filters
        assert listed == {record_id: tails[record_id] for record_id in ids}


def test_results_hide_earlier_runs_unless_history_is_asked_for(ran: Tenant) -> None:
    # An earlier run of t-a on i-1: a smaller record id for the same invocation and instance.
    with ran.engine.begin() as conn:
        conn.execute(
            insert(RECORDS).values(
                record_id="r-t-a-i-0",
                invoke_id="t-a",
                instance_id="i-1",
                state=ExecutionState.TIMEOUT.value,
                output_size=0,
                output_limit=1024,
                dropped=0,
                created_ms=NOW - 1,
            )
        )
    assert results(ran, invoke_id="t-a") == (
        {"r-t-a-i-2": b"part one, part two", "r-t-a-i-1": b"hello"},
        2,
    )
    assert results(ran, invoke_id="t-a", include_history=True) == (
        {"r-t-a-i-2": b"part one, part two", "r-t-a-i-1": b"hello", "r-t-a-i-0": b""},
        3,
    )
    assert results(ran, invoke_id="t-a", status=InvokeStatus.FAILED, include_history=True) == (
        {"r-t-a-i-0": b""},
        1,
    )
    assert results(ran, invoke_id="t-a", status=InvokeStatus.FAILED) == ({}, 0)
    # A page of one after r-t-a-i-2: its record and the one that says a next page exists.
    assert results(ran, invoke_id="t-a", include_history=True, at=page(1, "r-t-a-i-2")) == (
        {"r-t-a-i-1": b"hello", "r-t-a-i-0": b""},
        3,
    )


def test_reader_threads_see_what_was_committed_since_their_last_read(engine: Engine) -> None:
    def names(conn: Connection) -> list[str]:
        return [
            c.spec.name for c in commands.list_commands(conn, "a-1", REGION, "", "", None, PAGE)[0]
        ]

    def create(conn: Connection, command_id: str) -> None:
        commands.store_command(conn, "a-1", command_id, COMMANDS[command_id], NOW)

    def fail(conn: Connection) -> None:
        raise LookupError("no such thing")

    async def scenario(db: Database) -> None:
        assert await db.read(names) == []
        await db.write(create, "c-1")
        # As many reads as there are reader threads, twice: each thread's kept connection.
        assert [await db.read(names) for _ in range(8)] == [["deploy web"]] * 8
        with pytest.raises(LookupError, match="no such thing"):
            await db.read(fail)
        await db.write(create, "c-2")
        assert (
            await asyncio.gather(*(db.read(names) for _ in range(8)))
            == [["100%_done", "deploy web"]] * 8
        )

    db = Database(engine, read_threads=4)
    try:
        asyncio.run(scenario(db))
    finally:
        db.close()

    async def after_close() -> None:
        with pytest.raises(RuntimeError, match="closed"):
            await db.read(names)

    asyncio.run(after_close())


def test_reads_one_after_another_run_on_one_thread(engine: Engine) -> None:
    def thread_name(conn: Connection) -> str:
        return threading.current_thread().name

    async def scenario(db: Database) -> set[str]:
        return {await db.read(thread_name) for _ in range(20)}

    db = Database(engine, read_threads=4)
    try:
        assert asyncio.run(scenario(db)) == {"db-read_0"}
    finally:
        db.close()


def test_overlapping_reads_past_the_threads_wait_and_all_complete(engine: Engine) -> None:
    gate = threading.Event()
    started: list[int] = []
    lock = threading.Lock()

    async def scenario(db: Database) -> list[tuple[int, str]]:
        loop = asyncio.get_running_loop()
        two_started = asyncio.Event()

        def held(conn: Connection, i: int) -> tuple[int, str]:
            with lock:
                started.append(i)
                if len(started) == 2:
                    loop.call_soon_threadsafe(two_started.set)
            assert gate.wait(30)
            return i, threading.current_thread().name

        reads = [asyncio.ensure_future(db.read(held, i)) for i in range(6)]
        await asyncio.wait_for(two_started.wait(), 30)
        # Both threads hold a read; the other four wait for one of them.
        assert sorted(started) == [0, 1]
        gate.set()
        return await asyncio.gather(*reads)

    db = Database(engine, read_threads=2)
    try:
        done = asyncio.run(scenario(db))
    finally:
        db.close()
    assert [i for i, _ in done] == list(range(6))
    assert {name for _, name in done} == {"db-read_0", "db-read_1"}
    assert sorted(started) == list(range(6))
