"""Accounts, API keys, activations, registration, the audit trail and cross-account isolation
(server/store/security.py and the account scoping of the other repositories), real SQLite."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import Engine, select

from cloudassist.server.domain import ids, reasons
from cloudassist.server.domain.accounts import AuditEntry, Principal
from cloudassist.server.domain.credentials import split_token
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
from cloudassist.server.domain.pagination import Page
from cloudassist.server.domain.reports import OutputAppend, TaskStart
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import EndKind, TaskEnd
from cloudassist.server.store import commands, invocations, security
from cloudassist.server.store.idempotency import IdempotencyKey
from cloudassist.server.store.instances import deregister_instance, find_instances, list_instances
from cloudassist.server.store.invocation_changes import stop_invocation
from cloudassist.server.store.invocations import InvocationPlan
from cloudassist.server.store.reports import apply_reports
from cloudassist.server.store.results import (
    find_record,
    list_invocations,
    list_results,
    read_output,
)
from cloudassist.server.store.tables import ACCOUNTS, RECORDS
from cloudassist.server.store.watch import watch_snapshot
from tests.unit.tenancy import DAY_MS, REGION, Tenant, new_tenant

NOW = 1_700_000_000_000
PAGE = Page(size=50, after_id=None, fingerprint="test")
INVOKE_ID = "t-acme"
RECORD_ID = "r-acme-i-1"


@pytest.fixture
def acme(engine: Engine) -> Tenant:
    tenant = new_tenant(engine, "acme", NOW)
    tenant.register("i-1", NOW)
    return tenant


@pytest.fixture
def globex(engine: Engine) -> Tenant:
    tenant = new_tenant(engine, "globex", NOW)
    tenant.register("i-2", NOW)
    return tenant


def authenticate(engine: Engine, token: str) -> Principal:
    parts = split_token(token)
    assert parts is not None
    with engine.connect() as conn:
        return security.authenticate_key(conn, *parts)


def new_key(engine: Engine, account_id: str) -> str:
    with engine.begin() as conn:
        _, token = security.create_api_key(conn, account_id, "test key", NOW)
    return token


def register(
    engine: Engine, activation_id: str, code: str, instance_id: str, now_ms: int = NOW
) -> tuple[str, str, str]:
    with engine.begin() as conn:
        return security.register_instance(
            conn, activation_id, code, instance_id, OsType.LINUX, "host", now_ms
        )


def command_spec(name: str = "hello") -> CommandSpec:
    return CommandSpec(
        region_id=REGION,
        name=name,
        type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo hello",
        description="",
        working_dir="",
        timeout_seconds=60,
        enable_parameter=False,
        parameter_names=(),
    )


def create_command(
    tenant: Tenant,
    command_id: str,
    quota: int = 100,
    key: IdempotencyKey | None = None,
) -> str:
    with tenant.engine.begin() as conn:
        return commands.create_command(
            conn, tenant.account_id, command_id, command_spec(), NOW, quota, key
        )


def invoke(tenant: Tenant, instance_id: str, invoke_id: str, record_id: str) -> None:
    """Stores command c-<invoke id> and a one-shot invocation of it on the instance."""
    command_id = f"c-{invoke_id}"
    create_command(tenant, command_id)
    spec = InvocationSpec(
        region_id=REGION,
        command_id=command_id,
        command_name="hello",
        command_type=CommandType.RUN_SHELL_SCRIPT,
        content=b"echo hello",
        enable_parameter=False,
        parameters={},
        instance_ids=(instance_id,),
        repeat_mode=RepeatMode.ONCE,
        frequency="",
        timeout_seconds=60,
        working_dir="",
        username="",
    )
    with tenant.engine.begin() as conn:
        invocations.create_invocation(
            conn,
            InvocationPlan(
                account_id=tenant.account_id,
                invoke_id=invoke_id,
                spec=spec,
                record_ids={instance_id: record_id},
                now_ms=NOW,
                day_start_ms=NOW - 3_600_000,
                daily_quota=100,
                delivery_deadline_ms=NOW + 30_000,
                output_limit=1024,
                idempotency=None,
            ),
        )


def record_row(engine: Engine, record_id: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(select(RECORDS).where(RECORDS.c.record_id == record_id)).one()


@pytest.fixture
def acme_ran(acme: Tenant) -> Tenant:
    """acme's i-1 has run invocation t-acme (record r-acme-i-1) and printed "acme secret"."""
    acme.hello("i-1", NOW)
    invoke(acme, "i-1", INVOKE_ID, RECORD_ID)
    end = TaskEnd(
        record_id=RECORD_ID,
        instance_id="i-1",
        kind=EndKind.FINISHED,
        exit_code=0,
        output_size=11,
        time_ms=NOW + 2_000,
        start_ms=NOW + 1_000,
    )
    with acme.engine.begin() as conn:
        effects = apply_reports(
            conn,
            [
                TaskStart(RECORD_ID, "i-1", NOW + 1_000),
                OutputAppend(RECORD_ID, "i-1", 0, b"acme secret"),
                end,
            ],
            NOW + 2_000,
        )
    assert effects.rejected == []
    return acme


# --- bootstrap_admin ---


def test_bootstrap_admin_on_an_empty_database_makes_an_admin_account_and_a_working_key(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        token = security.bootstrap_admin(conn, NOW)
    assert token is not None
    with engine.connect() as conn:
        accounts, total = security.list_accounts(conn, PAGE)
    assert total == 1
    [account] = accounts
    assert (account.name, account.admin, account.created_ms) == (
        security.BOOTSTRAP_ACCOUNT,
        True,
        NOW,
    )
    who = authenticate(engine, token)
    assert who == Principal(account.account_id, token.partition(".")[0], admin=True)


def test_bootstrap_admin_a_second_time_does_nothing(engine: Engine) -> None:
    with engine.begin() as conn:
        first = security.bootstrap_admin(conn, NOW)
    with engine.begin() as conn:
        assert security.bootstrap_admin(conn, NOW + 1) is None
    with engine.connect() as conn:
        assert security.list_accounts(conn, PAGE)[1] == 1
        assert security.list_api_keys(conn, "", PAGE)[1] == 1
    assert first is not None
    assert authenticate(engine, first).admin


def test_bootstrap_admin_does_nothing_when_any_account_exists(engine: Engine) -> None:
    with engine.begin() as conn:
        security.create_account(conn, "acme", False, NOW)
    with engine.begin() as conn:
        assert security.bootstrap_admin(conn, NOW) is None
    with engine.connect() as conn:
        names = conn.execute(select(ACCOUNTS.c.name)).scalars().all()
        assert security.list_api_keys(conn, "", PAGE)[1] == 0
    assert names == ["acme"]


# --- accounts and API keys ---


def test_authenticate_key_with_the_right_secret_gives_the_principal(engine: Engine) -> None:
    with engine.begin() as conn:
        plain = security.create_account(conn, "acme", False, NOW)
        admin = security.create_account(conn, "ops", True, NOW)
        plain_key, plain_token = security.create_api_key(conn, plain.account_id, "ci", NOW)
        _, admin_token = security.create_api_key(conn, admin.account_id, "ops", NOW)
    assert plain_token.startswith(plain_key.key_id + ".")
    assert authenticate(engine, plain_token) == Principal(
        plain.account_id, plain_key.key_id, admin=False
    )
    who = authenticate(engine, admin_token)
    assert (who.account_id, who.admin) == (admin.account_id, True)


@pytest.mark.parametrize("case", ["wrong secret", "unknown key", "revoked key"])
def test_authenticate_key_refuses_bad_keys(engine: Engine, case: str) -> None:
    with engine.begin() as conn:
        account = security.create_account(conn, "acme", True, NOW)
    parts = split_token(new_key(engine, account.account_id))
    assert parts is not None
    key_id, secret = parts
    if case == "wrong secret":
        secret = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    elif case == "unknown key":
        key_id = ids.new_id("k")
    else:
        with engine.begin() as conn:
            security.revoke_api_key(conn, key_id, NOW + 1)
    with pytest.raises(Unauthenticated) as caught, engine.connect() as conn:
        security.authenticate_key(conn, key_id, secret)
    assert caught.value.reason == reasons.INVALID_API_KEY


def test_create_api_key_for_an_unknown_account_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as caught, engine.begin() as conn:
        security.create_api_key(conn, "a-nobody", "key", NOW)
    assert caught.value.reason == reasons.ACCOUNT_NOT_FOUND
    assert caught.value.field == "account_id"
    with engine.connect() as conn:
        assert security.list_api_keys(conn, "", PAGE)[1] == 0


def test_revoking_a_key_twice_is_not_found_the_second_time(engine: Engine) -> None:
    with engine.begin() as conn:
        account = security.create_account(conn, "acme", False, NOW)
        key, _ = security.create_api_key(conn, account.account_id, "key", NOW)
    with engine.begin() as conn:
        security.revoke_api_key(conn, key.key_id, NOW + 5)
    with pytest.raises(NotFound) as caught, engine.begin() as conn:
        security.revoke_api_key(conn, key.key_id, NOW + 9)
    assert caught.value.reason == reasons.KEY_NOT_FOUND
    with engine.connect() as conn:
        [listed], _ = security.list_api_keys(conn, account.account_id, PAGE)
    assert listed == dataclasses.replace(key, revoked_ms=NOW + 5)


def test_create_account_with_a_taken_name_is_already_exists(engine: Engine) -> None:
    with engine.begin() as conn:
        first = security.create_account(conn, "acme", False, NOW)
    with pytest.raises(AlreadyExists) as caught, engine.begin() as conn:
        security.create_account(conn, "acme", True, NOW + 1)
    assert caught.value.reason == reasons.ACCOUNT_NAME_TAKEN
    assert caught.value.field == "name"
    with engine.connect() as conn:
        assert security.list_accounts(conn, PAGE) == ([first], 1)


def test_create_activation_for_an_unknown_account_is_not_found(engine: Engine) -> None:
    with pytest.raises(NotFound) as caught, engine.begin() as conn:
        security.create_activation(conn, "a-nobody", REGION, "", 1, NOW + DAY_MS, NOW)
    assert caught.value.reason == reasons.ACCOUNT_NOT_FOUND


# --- register_instance ---


def test_register_instance_puts_it_in_the_activations_account_and_region(engine: Engine) -> None:
    tenant = new_tenant(engine, "acme", NOW, region_id="cn-shanghai")
    instance_id, secret, region_id = register(
        engine, tenant.activation_id, tenant.code, "i-web", NOW + 3
    )
    assert (instance_id, region_id) == ("i-web", "cn-shanghai")
    assert secret
    with engine.connect() as conn:
        instance = find_instances(conn, tenant.account_id, "cn-shanghai", ["i-web"])["i-web"]
        [activation], _ = security.list_activations(conn, PAGE)
    assert (instance.online, instance.registered_ms, instance.os_type) == (
        False,
        NOW + 3,
        OsType.LINUX,
    )
    assert activation.registrations == 1
    tenant.secrets["i-web"] = secret
    tenant.hello("i-web", NOW + 4)


def test_register_instance_without_an_id_makes_one(engine: Engine) -> None:
    tenant = new_tenant(engine, "acme", NOW)
    instance_id, _, _ = register(engine, tenant.activation_id, tenant.code, "")
    assert instance_id.startswith("i-")
    with engine.connect() as conn:
        assert instance_id in find_instances(conn, tenant.account_id, REGION, [instance_id])


@pytest.mark.parametrize("case", ["wrong code", "unknown activation"])
def test_register_instance_with_a_bad_activation_is_unauthenticated(
    engine: Engine, case: str
) -> None:
    tenant = new_tenant(engine, "acme", NOW)
    activation_id, code = tenant.activation_id, tenant.code
    if case == "wrong code":
        code = new_tenant(engine, "globex", NOW).code
    else:
        activation_id = ids.new_id("act")
    with pytest.raises(Unauthenticated) as caught:
        register(engine, activation_id, code, "i-1")
    assert caught.value.reason == reasons.INVALID_ACTIVATION
    with engine.connect() as conn:
        assert find_instances(conn, tenant.account_id, REGION, ["i-1"]) == {}
        activations, _ = security.list_activations(conn, PAGE)
    assert all(a.registrations == 0 for a in activations)


def test_register_instance_with_an_expired_activation_is_a_failed_precondition(
    engine: Engine,
) -> None:
    tenant = new_tenant(engine, "acme", NOW)  # expires at NOW + DAY_MS
    register(engine, tenant.activation_id, tenant.code, "i-1", NOW + DAY_MS - 1)
    with pytest.raises(FailedPrecondition) as caught:
        register(engine, tenant.activation_id, tenant.code, "i-2", NOW + DAY_MS)
    assert caught.value.reason == reasons.ACTIVATION_EXPIRED
    with engine.connect() as conn:
        assert list(find_instances(conn, tenant.account_id, REGION, ["i-1", "i-2"])) == ["i-1"]


def test_register_instance_past_the_activations_limit_is_resource_exhausted(
    engine: Engine,
) -> None:
    tenant = new_tenant(engine, "acme", NOW, max_registrations=2)
    register(engine, tenant.activation_id, tenant.code, "i-1")
    register(engine, tenant.activation_id, tenant.code, "i-2")
    with pytest.raises(ResourceExhausted) as caught:
        register(engine, tenant.activation_id, tenant.code, "i-3")
    assert caught.value.reason == reasons.ACTIVATION_EXHAUSTED
    with engine.connect() as conn:
        [activation], _ = security.list_activations(conn, PAGE)
        assert find_instances(conn, tenant.account_id, REGION, ["i-3"]) == {}
    assert activation.registrations == 2


def test_registering_an_id_again_in_the_same_account_rotates_its_secret(acme: Tenant) -> None:
    old = acme.secrets["i-1"]
    acme.hello("i-1", NOW + 1)
    new = acme.register("i-1", NOW + 2)
    assert new != old
    with pytest.raises(Unauthenticated) as caught:
        acme.hello("i-1", NOW + 3, secret=old)
    assert caught.value.reason == reasons.INVALID_INSTANCE_CREDENTIALS
    acme.hello("i-1", NOW + 4, secret=new)
    with acme.engine.connect() as conn:
        instances, total = list_instances(conn, acme.account_id, REGION, [], PAGE)
    assert total == 1
    assert instances[0].registered_ms == NOW  # still the same instance


def test_registering_an_id_of_another_account_is_already_exists(
    acme: Tenant, globex: Tenant
) -> None:
    with pytest.raises(AlreadyExists) as caught:
        globex.register("i-1", NOW + 1)
    assert caught.value.reason == reasons.INSTANCE_ID_TAKEN
    assert caught.value.field == "instance_id"
    with acme.engine.connect() as conn:
        assert "i-1" in find_instances(conn, acme.account_id, REGION, ["i-1"])
        assert find_instances(conn, globex.account_id, REGION, ["i-1"]) == {}
    acme.hello("i-1", NOW + 2)  # acme's secret still works


# --- deregister_instance ---


def test_deregistered_instance_can_no_longer_say_hello(acme: Tenant) -> None:
    acme.hello("i-1", NOW + 1)
    with acme.engine.begin() as conn:
        deregister_instance(conn, acme.account_id, REGION, "i-1", NOW)
    with pytest.raises(Unauthenticated) as caught:
        acme.hello("i-1", NOW + 2)
    assert caught.value.reason == reasons.INVALID_INSTANCE_CREDENTIALS
    with acme.engine.connect() as conn:
        assert find_instances(conn, acme.account_id, REGION, ["i-1"]) == {}


def test_deregistering_another_accounts_instance_is_not_found(acme: Tenant, globex: Tenant) -> None:
    with pytest.raises(NotFound) as caught, acme.engine.begin() as conn:
        deregister_instance(conn, globex.account_id, REGION, "i-1", NOW)
    assert caught.value.reason == reasons.INSTANCE_NOT_FOUND
    with acme.engine.connect() as conn:
        assert "i-1" in find_instances(conn, acme.account_id, REGION, ["i-1"])
    acme.hello("i-1", NOW + 1)


def _deregister_i_1_with_a_pending_task(acme: Tenant) -> None:
    acme.hello("i-1", NOW)
    invoke(acme, "i-1", INVOKE_ID, RECORD_ID)
    with acme.engine.begin() as conn:
        deregister_instance(conn, acme.account_id, REGION, "i-1", NOW)


def test_deregistering_ends_the_instances_runs_in_flight(acme: Tenant) -> None:
    _deregister_i_1_with_a_pending_task(acme)
    record = record_row(acme.engine, RECORD_ID)
    assert record.state == ExecutionState.ERROR
    assert record.error_code == "InstanceDeregistered"


def test_an_id_another_account_used_cannot_be_registered_again_by_this_one(
    acme: Tenant, globex: Tenant
) -> None:
    # Records are tied to instance ids: a reused id must never hand acme's tasks or records
    # to globex's agent, so the id stays acme's even after it is deregistered.
    _deregister_i_1_with_a_pending_task(acme)
    with pytest.raises(AlreadyExists) as caught:
        globex.register("i-1", NOW + 1_000)
    assert caught.value.reason == "InvalidInstanceId.Duplicate"
    acme.register("i-1", NOW + 2_000)  # its own account may register it again


# --- audit ---


def _audit(engine: Engine, account_id: str, method: str, time_ms: int) -> AuditEntry:
    entry = AuditEntry(
        event_id=ids.new_id("e", time_ms),
        time_ms=time_ms,
        account_id=account_id,
        key_id=f"k-{account_id}",
        method=method,
        resource_ids=(REGION, f"c-{time_ms}"),
        code="OK",
        peer="ipv4:127.0.0.1:5000",
    )
    with engine.begin() as conn:
        security.record_audit(conn, entry)
    return entry


CREATE = "/cloudassist.v1.CommandService/CreateCommand"
STOP = "/cloudassist.v1.CommandService/StopInvocation"


def test_list_audit_filters_by_account_and_method_newest_first(engine: Engine) -> None:
    a1 = _audit(engine, "a-1", CREATE, NOW)
    b1 = _audit(engine, "a-2", CREATE, NOW + 1)
    a2 = _audit(engine, "a-1", STOP, NOW + 2)
    a3 = _audit(engine, "a-1", CREATE, NOW + 3)
    with engine.connect() as conn:
        assert security.list_audit(conn, "a-1", "", PAGE) == ([a3, a2, a1], 3)
        assert security.list_audit(conn, "a-1", CREATE, PAGE) == ([a3, a1], 2)
        assert security.list_audit(conn, "", CREATE, PAGE) == ([a3, b1, a1], 3)
        assert security.list_audit(conn, "", "", PAGE) == ([a3, a2, b1, a1], 4)
        assert security.list_audit(conn, "a-2", STOP, PAGE) == ([], 0)
        second_page = Page(size=2, after_id=a2.event_id, fingerprint="test")
        assert security.list_audit(conn, "a-1", "", second_page) == ([a1], 3)


def test_record_audit_keeps_the_resource_ids_and_cuts_a_long_peer(engine: Engine) -> None:
    entry = dataclasses.replace(
        _audit(engine, "a-1", CREATE, NOW), event_id=ids.new_id("e", NOW + 1), peer="p" * 300
    )
    with engine.begin() as conn:
        security.record_audit(conn, entry)
    with engine.connect() as conn:
        newest = security.list_audit(conn, "a-1", CREATE, PAGE)[0][0]
    assert newest.resource_ids == (REGION, f"c-{NOW}")
    assert newest.peer == "p" * 128


# --- cross-account isolation ---


def test_commands_of_one_account_are_not_found_by_another(acme: Tenant, globex: Tenant) -> None:
    create_command(acme, "c-acme")
    engine = acme.engine
    with engine.connect() as conn:
        with pytest.raises(NotFound) as caught:
            commands.get_command(conn, globex.account_id, REGION, "c-acme")
        assert caught.value.reason == reasons.COMMAND_NOT_FOUND
        assert commands.list_commands(conn, globex.account_id, REGION, "", "", None, PAGE) == (
            [],
            0,
        )
        assert commands.list_commands(
            conn, globex.account_id, REGION, "c-acme", "", None, PAGE
        ) == ([], 0)
    with pytest.raises(NotFound), engine.begin() as conn:
        commands.modify_command(
            conn,
            globex.account_id,
            REGION,
            "c-acme",
            lambda spec: dataclasses.replace(spec, name="hijacked"),
        )
    with pytest.raises(NotFound), engine.begin() as conn:
        commands.delete_command(conn, globex.account_id, REGION, "c-acme")
    with engine.connect() as conn:
        assert commands.get_command(conn, acme.account_id, REGION, "c-acme").spec == command_spec()


def test_the_command_quota_counts_only_the_accounts_own_commands(
    acme: Tenant, globex: Tenant
) -> None:
    create_command(acme, "c-acme", quota=1)
    with pytest.raises(ResourceExhausted):
        create_command(acme, "c-acme-2", quota=1)
    assert create_command(globex, "c-globex", quota=1) == "c-globex"


def test_a_client_token_of_one_account_means_nothing_to_another(
    acme: Tenant, globex: Tenant
) -> None:
    def key(tenant: Tenant, request_hash: str) -> IdempotencyKey:
        return IdempotencyKey(tenant.account_id, REGION, "CreateCommand", "token-1", request_hash)

    assert create_command(acme, "c-acme", key=key(acme, "hash-a")) == "c-acme"
    # Neither the command of the first request nor a mismatch: a new command.
    assert create_command(globex, "c-globex", key=key(globex, "hash-b")) == "c-globex"
    with acme.engine.connect() as conn:
        listed, _ = commands.list_commands(conn, globex.account_id, REGION, "", "", None, PAGE)
    assert [c.command_id for c in listed] == ["c-globex"]


def test_invocations_of_one_account_are_not_found_by_another(
    acme_ran: Tenant, globex: Tenant
) -> None:
    engine, other = acme_ran.engine, globex.account_id
    with engine.connect() as conn:
        with pytest.raises(NotFound) as caught:
            invocations.get_invocation(conn, other, REGION, INVOKE_ID)
        assert caught.value.reason == reasons.INVOCATION_NOT_FOUND
        for filters in [("", "", ""), (INVOKE_ID, "", ""), ("", "", "i-1")]:
            assert list_invocations(conn, other, REGION, *filters, None, PAGE) == (
                [],
                0,
            )
        with pytest.raises(NotFound):
            watch_snapshot(conn, other, REGION, INVOKE_ID, "")
        own, total = list_invocations(conn, acme_ran.account_id, REGION, "", "", "", None, PAGE)
    assert ([i.invoke_id for i in own], total) == ([INVOKE_ID], 1)


def test_stopping_another_accounts_invocation_is_not_found(acme: Tenant, globex: Tenant) -> None:
    acme.hello("i-1", NOW)
    invoke(acme, "i-1", INVOKE_ID, RECORD_ID)
    with pytest.raises(NotFound) as caught, acme.engine.begin() as conn:
        stop_invocation(conn, globex.account_id, REGION, INVOKE_ID, [], NOW, NOW)
    assert caught.value.reason == reasons.INVOCATION_NOT_FOUND
    assert record_row(acme.engine, RECORD_ID).state == ExecutionState.PENDING


def test_results_and_output_of_one_account_are_not_found_by_another(
    acme_ran: Tenant, globex: Tenant
) -> None:
    engine, other = acme_ran.engine, globex.account_id
    with engine.connect() as conn:
        assert list_results(conn, other, REGION, "", "", "", None, True, PAGE) == (
            [],
            0,
        )
        assert list_results(conn, other, REGION, INVOKE_ID, "i-1", "", None, True, PAGE) == ([], 0)
        for instance_id, record_id in [("", ""), ("i-1", ""), ("i-1", RECORD_ID), ("", RECORD_ID)]:
            with pytest.raises(NotFound):
                read_output(conn, other, REGION, INVOKE_ID, instance_id, record_id, 0, 1 << 20)
            with pytest.raises(NotFound):
                find_record(conn, other, REGION, INVOKE_ID, instance_id, record_id)
        own = read_output(conn, acme_ran.account_id, REGION, INVOKE_ID, "", "", 0, 99)
    assert own.data == b"acme secret"


def test_instances_of_one_account_are_absent_for_another(acme: Tenant, globex: Tenant) -> None:
    with acme.engine.connect() as conn:
        found = find_instances(conn, globex.account_id, REGION, ["i-1", "i-2"])
        listed, total = list_instances(conn, globex.account_id, REGION, [], PAGE)
        filtered = list_instances(conn, globex.account_id, REGION, ["i-1"], PAGE)
        own = find_instances(conn, acme.account_id, REGION, ["i-1", "i-2"])
    assert list(found) == ["i-2"]
    assert ([i.instance_id for i in listed], total) == (["i-2"], 1)
    assert filtered == ([], 0)
    assert list(own) == ["i-1"]
