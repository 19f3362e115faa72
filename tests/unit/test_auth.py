"""API keys from metadata, the per-account rate limit (server/auth.py), secrets
(server/domain/credentials.py) and the ids an audit event names (server/api/guard.py)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message

from cloudassist.server import auth
from cloudassist.server.api.guard import Guard, resource_ids
from cloudassist.server.auth import Authenticator, RateLimiter, bearer_token
from cloudassist.server.domain import reasons
from cloudassist.server.domain.accounts import Principal
from cloudassist.server.domain.credentials import (
    hash_secret,
    new_api_key,
    new_secret,
    secret_matches,
    split_token,
)
from cloudassist.server.domain.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from cloudassist.server.store import security
from cloudassist.server.store.database import Database
from cloudassist.v1 import admin_pb2, command_pb2

NOW = 1_700_000_000_000


class FakeClock:
    """Stands in for the `time` module server.auth reads time.monotonic() from."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def monotonic(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(auth, "time", fake)
    return fake


# --- bearer_token ---


@pytest.mark.parametrize(
    "metadata",
    [
        None,
        [],
        [("x-request-id", "abc")],
        [("authorization-extra", "Bearer k-1.secret")],
    ],
)
def test_bearer_token_without_an_authorization_header_is_unauthenticated(
    metadata: list[tuple[str, Any]] | None,
) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_token(metadata)
    assert caught.value.reason == reasons.MISSING_API_KEY


@pytest.mark.parametrize(
    "value", ["Basic dXNlcjpwYXNz", "k-1.secret", "Bearer", "Bearer    ", "", "Token k-1.secret"]
)
def test_bearer_token_with_another_scheme_or_no_token_is_unauthenticated(value: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        bearer_token([("authorization", value)])
    assert caught.value.reason == reasons.MISSING_API_KEY


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("authorization", "Bearer k-1.secret"),
        ("Authorization", "Bearer k-1.secret"),
        ("AUTHORIZATION", "bearer k-1.secret"),
        ("authorization", "BEARER   k-1.secret  "),
        ("authorization", b"Bearer k-1.secret"),
        ("Authorization", b"  bearer k-1.secret\n"),
    ],
)
def test_bearer_token_returns_the_token(key: str, value: str | bytes) -> None:
    assert bearer_token([("x-request-id", "abc"), (key, value)]) == "k-1.secret"


def test_bearer_token_with_undecodable_bytes_does_not_crash() -> None:
    assert bearer_token([("authorization", b"Bearer k-1.\xffsecret")]) == "k-1.\ufffdsecret"


# --- RateLimiter ---


def test_rate_limiter_allows_a_burst_then_throttles(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=2.0, burst=3.0)
    for _ in range(3):
        limiter.admit("a-1")
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("a-1")
    assert caught.value.reason == reasons.THROTTLED == "Throttling.User"
    assert caught.value.retry_after_seconds is not None
    assert caught.value.retry_after_seconds > 0
    assert caught.value.retry_after_seconds == pytest.approx(0.5)


def test_rate_limiter_admits_again_after_the_retry_delay(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=4.0, burst=2.0)
    limiter.admit("a-1")
    limiter.admit("a-1")
    with pytest.raises(ResourceExhausted) as caught:
        limiter.admit("a-1")
    wait = caught.value.retry_after_seconds
    assert wait is not None
    clock.advance(wait / 2)
    with pytest.raises(ResourceExhausted) as again:
        limiter.admit("a-1")
    assert again.value.retry_after_seconds is not None
    assert 0 < again.value.retry_after_seconds < wait
    clock.advance(wait / 2)
    limiter.admit("a-1")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a-1")


def test_rate_limiter_refills_no_more_than_the_burst(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=10.0, burst=3.0)
    limiter.admit("a-1")
    clock.advance(3_600)
    for _ in range(3):
        limiter.admit("a-1")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a-1")


@pytest.mark.parametrize("rate", [0.0, -1.0])
def test_rate_limiter_with_no_rate_is_unlimited(clock: FakeClock, rate: float) -> None:
    limiter = RateLimiter(rate=rate, burst=1.0)
    for _ in range(10_000):
        limiter.admit("a-1")


def test_rate_limiter_buckets_are_per_account(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=2.0)
    limiter.admit("a-1")
    limiter.admit("a-1")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a-1")
    limiter.admit("a-2")
    limiter.admit("a-2")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a-2")


def test_rate_limiter_burst_below_one_still_admits_one(clock: FakeClock) -> None:
    limiter = RateLimiter(rate=1.0, burst=0.0)
    limiter.admit("a-1")
    with pytest.raises(ResourceExhausted):
        limiter.admit("a-1")


# --- Authenticator (real database) ---


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database.open(f"sqlite:///{tmp_path}/db.sqlite")
    yield database
    database.close()


def make_key(db: Database, name: str = "acme", admin: bool = False) -> tuple[str, str, str]:
    """(account id, key id, token) of a new account's key."""
    with db.engine.begin() as conn:
        account = security.create_account(conn, name, admin, NOW)
        key, token = security.create_api_key(conn, account.account_id, "test", NOW)
    return account.account_id, key.key_id, token


def revoke(db: Database, key_id: str) -> None:
    with db.engine.begin() as conn:
        security.revoke_api_key(conn, key_id, NOW + 1)


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


async def test_authenticator_accepts_a_good_key(db: Database) -> None:
    account_id, key_id, token = make_key(db, admin=True)
    authenticator = Authenticator(db)
    assert await authenticator.authenticate(bearer(token)) == Principal(account_id, key_id, True)
    # Again, from the cache.
    assert await authenticator.authenticate(bearer(token)) == Principal(account_id, key_id, True)


async def test_authenticator_refuses_a_wrong_secret_for_a_cached_key_id(db: Database) -> None:
    _, key_id, token = make_key(db)
    authenticator = Authenticator(db)
    await authenticator.authenticate(bearer(token))
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(bearer(f"{key_id}.{new_secret()}"))
    assert caught.value.reason == reasons.INVALID_API_KEY
    # The good secret still works.
    await authenticator.authenticate(bearer(token))


async def test_authenticator_forget_makes_a_revoked_key_fail_at_once(db: Database) -> None:
    _, key_id, token = make_key(db)
    authenticator = Authenticator(db, cache_seconds=3_600)
    await authenticator.authenticate(bearer(token))
    revoke(db, key_id)
    # Still cached (what another server sharing the database would see for cache_seconds)...
    await authenticator.authenticate(bearer(token))
    authenticator.forget(key_id)
    # ...but the server that revoked it forgets it at once.
    with pytest.raises(Unauthenticated) as caught:
        await authenticator.authenticate(bearer(token))
    assert caught.value.reason == reasons.INVALID_API_KEY


async def test_authenticator_cache_expires(db: Database, clock: FakeClock) -> None:
    _, key_id, token = make_key(db)
    authenticator = Authenticator(db, cache_seconds=5.0)
    await authenticator.authenticate(bearer(token))
    revoke(db, key_id)
    clock.advance(4.9)
    await authenticator.authenticate(bearer(token))
    clock.advance(0.2)
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(bearer(token))


async def test_authenticator_forgets_keys_revoked_on_another_server(db: Database) -> None:
    # What the bus delivers when another server sharing the database revokes keys.
    _, key_id, token = make_key(db)
    _, _, other_token = make_key(db, name="other")
    authenticator = Authenticator(db, cache_seconds=3_600)
    await authenticator.authenticate(bearer(token))
    await authenticator.authenticate(bearer(other_token))
    revoke(db, key_id)
    authenticator.forget_keys([key_id])
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(bearer(token))
    await authenticator.authenticate(bearer(other_token))


async def test_authenticator_caches_nothing_while_revocations_could_be_missed(
    db: Database,
) -> None:
    _, key_id, token = make_key(db)
    epoch: list[int | None] = [1]
    authenticator = Authenticator(db, cache_seconds=3_600, epoch=lambda: epoch[0])
    await authenticator.authenticate(bearer(token))
    revoke(db, key_id)
    # The bus stopped listening: a revocation elsewhere may go unheard, so the cache is not
    # used...
    epoch[0] = None
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(bearer(token))
    # ...nor what was cached before the bus listened again.
    _, key_id, token = make_key(db, name="second")
    epoch[0] = 2
    await authenticator.authenticate(bearer(token))
    revoke(db, key_id)
    epoch[0] = 3
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(bearer(token))


async def test_authenticator_does_not_keep_a_check_that_raced_a_revocation(db: Database) -> None:
    _, key_id, token = make_key(db)
    authenticator = Authenticator(db, cache_seconds=3_600)
    # The revocation is heard while the key's row is being read (as read before it).
    read = db.read

    async def racing_read(*args: Any) -> Any:
        found = await read(*args)
        revoke(db, key_id)
        authenticator.forget(key_id)
        return found

    db.read = racing_read  # type: ignore[method-assign]
    await authenticator.authenticate(bearer(token))
    db.read = read  # type: ignore[method-assign]
    with pytest.raises(Unauthenticated):
        await authenticator.authenticate(bearer(token))


@pytest.mark.parametrize("token", ["no-dot", ".secret", "k-1.", "k-1." + "s" * 300])
async def test_authenticator_refuses_a_token_of_the_wrong_shape(db: Database, token: str) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(db).authenticate(bearer(token))
    assert caught.value.reason == reasons.INVALID_API_KEY


async def test_authenticator_without_a_key_is_unauthenticated(db: Database) -> None:
    with pytest.raises(Unauthenticated) as caught:
        await Authenticator(db).authenticate([])
    assert caught.value.reason == reasons.MISSING_API_KEY


class _Context:
    def __init__(self, metadata: list[tuple[str, str]]) -> None:
        self._metadata = metadata

    def invocation_metadata(self) -> list[tuple[str, str]]:
        return self._metadata


async def _no_record(_: object) -> None:
    raise AssertionError("admit records nothing")


async def test_admin_only_guard_refuses_a_non_admin_key(db: Database) -> None:
    _, _, plain = make_key(db, "acme", admin=False)
    account_id, key_id, admin = make_key(db, "ops", admin=True)
    guard = Guard(Authenticator(db), RateLimiter(0, 1), _no_record, admin_only=True)
    with pytest.raises(PermissionDenied) as caught:
        await guard.admit(_Context(bearer(plain)))  # type: ignore[arg-type]
    assert caught.value.reason == reasons.NOT_ADMIN
    who = await guard.admit(_Context(bearer(admin)))  # type: ignore[arg-type]
    assert who == Principal(account_id, key_id, True)


async def test_guard_rate_limits_per_account(db: Database, clock: FakeClock) -> None:
    _, _, token = make_key(db)
    guard = Guard(Authenticator(db), RateLimiter(1, 2), _no_record)
    await guard.admit(_Context(bearer(token)))  # type: ignore[arg-type]
    await guard.admit(_Context(bearer(token)))  # type: ignore[arg-type]
    with pytest.raises(ResourceExhausted) as caught:
        await guard.admit(_Context(bearer(token)))  # type: ignore[arg-type]
    assert caught.value.reason == reasons.THROTTLED


# --- credentials ---


@pytest.mark.parametrize(
    ("token", "parts"),
    [
        ("k-abc.s3cr3t", ("k-abc", "s3cr3t")),
        ("k-abc.s3.cr3t", ("k-abc", "s3.cr3t")),
        ("k." + "s" * 254, ("k", "s" * 254)),
        ("no-dot", None),
        ("", None),
        (".", None),
        (".secret", None),
        ("k-abc.", None),
        ("k." + "s" * 255, None),
    ],
)
def test_split_token(token: str, parts: tuple[str, str] | None) -> None:
    assert split_token(token) == parts


def test_new_api_key_token_splits_into_its_id_and_secret() -> None:
    key_id, secret, token = new_api_key()
    assert key_id.startswith("k-")
    assert "." not in key_id
    assert split_token(token) == (key_id, secret)
    assert new_api_key()[1] != secret


def test_secret_matches_only_its_own_hash() -> None:
    secret = new_secret()
    stored = hash_secret(secret)
    assert stored == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in stored
    assert secret_matches(secret, stored)
    assert not secret_matches(new_secret(), stored)
    assert not secret_matches(secret, None)
    assert not secret_matches(secret, "")
    assert not secret_matches("", stored)


def test_new_secrets_are_long_and_distinct() -> None:
    secrets = {new_secret() for _ in range(100)}
    assert len(secrets) == 100
    assert all(len(s) >= 43 for s in secrets)  # 32 random bytes, base64url


# --- guard.resource_ids ---


def _probe_classes() -> tuple[type[Message], type[Message], type[Message]]:
    """Outer { outer_id, count_id: int64, number_ids: repeated int64, client_token, token,
    middle: Middle, middles: repeated Middle }; Middle { middle_id, inner: Inner,
    child_ids: repeated string }; Inner { inner_id }."""
    f = descriptor_pb2.FieldDescriptorProto
    file = descriptor_pb2.FileDescriptorProto(
        name="tests/unit/resource_ids_probe.proto", package="probe", syntax="proto3"
    )

    def add(message: Any, name: str, number: int, kind: int, *, repeated: bool = False,
            type_name: str = "") -> None:  # fmt: skip
        field = message.field.add(
            name=name,
            number=number,
            type=kind,
            label=f.LABEL_REPEATED if repeated else f.LABEL_OPTIONAL,
        )
        if type_name:
            field.type_name = type_name

    inner = file.message_type.add(name="Inner")
    add(inner, "inner_id", 1, f.TYPE_STRING)
    middle = file.message_type.add(name="Middle")
    add(middle, "middle_id", 1, f.TYPE_STRING)
    add(middle, "inner", 2, f.TYPE_MESSAGE, type_name=".probe.Inner")
    add(middle, "child_ids", 3, f.TYPE_STRING, repeated=True)
    outer = file.message_type.add(name="Outer")
    add(outer, "outer_id", 1, f.TYPE_STRING)
    add(outer, "count_id", 2, f.TYPE_INT64)
    add(outer, "number_ids", 3, f.TYPE_INT64, repeated=True)
    add(outer, "client_token", 4, f.TYPE_STRING)
    add(outer, "token", 5, f.TYPE_STRING)
    add(outer, "middle", 6, f.TYPE_MESSAGE, type_name=".probe.Middle")
    add(outer, "middles", 7, f.TYPE_MESSAGE, repeated=True, type_name=".probe.Middle")
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(file.SerializeToString())
    return tuple(  # type: ignore[return-value]
        message_factory.GetMessageClass(pool.FindMessageTypeByName(f"probe.{name}"))
        for name in ("Outer", "Middle", "Inner")
    )


def test_resource_ids_takes_string_ids_of_the_message_and_its_direct_sub_messages() -> None:
    outer_type, middle_type, inner_type = _probe_classes()
    message = outer_type(
        outer_id="o-1",
        count_id=7,
        number_ids=[1, 2],
        client_token="client-token",
        token="k-1.secret",
        middle=middle_type(
            middle_id="m-1", child_ids=["c-1", "c-2"], inner=inner_type(inner_id="too-deep")
        ),
        middles=[middle_type(middle_id="in-a-list")],
    )
    assert resource_ids(message) == ("o-1", "m-1", "c-1", "c-2")


def test_resource_ids_of_an_invocation_request_and_its_response() -> None:
    request = command_pb2.InvokeCommandRequest(
        region_id="cn-hangzhou",
        command_id="c-1",
        instance_ids=["i-1", "i-2"],
        client_token="retry-token-1",
    )
    response = command_pb2.InvokeCommandResponse(invoke_id="t-1")
    # The region is where, not what: it is not a resource id.
    assert resource_ids(request, response) == ("c-1", "i-1", "i-2", "t-1")


def test_resource_ids_never_include_an_api_key_token_or_an_activation_code() -> None:
    request = admin_pb2.CreateApiKeyRequest(account_id="a-1", description="ci")
    response = admin_pb2.CreateApiKeyResponse(
        key=admin_pb2.ApiKey(key_id="k-1", account_id="a-1", description="ci"),
        token="k-1.the-secret",
    )
    assert resource_ids(request, response) == ("a-1", "k-1")
    activation = admin_pb2.CreateActivationResponse(
        activation=admin_pb2.Activation(
            activation_id="act-1", account_id="a-1", region_id="cn-hangzhou"
        ),
        activation_code="the-code",
    )
    assert resource_ids(activation) == ("act-1", "a-1")


def test_resource_ids_skips_missing_messages_and_empty_fields() -> None:
    request = command_pb2.StopInvocationRequest(region_id="cn-hangzhou", invoke_id="t-1")
    assert resource_ids(request, None) == ("t-1",)
    assert resource_ids(command_pb2.StopInvocationResponse(), None) == ()
    assert resource_ids() == ()


@pytest.mark.parametrize(
    ("method", "audited"),
    [
        ("CreateCommand", True),
        ("InvokeCommand", True),
        ("RunCommand", True),
        ("StopInvocation", True),
        ("RevokeApiKey", True),
        ("DeregisterInstance", True),
        ("DescribeInvocations", False),
        ("ListAuditEvents", False),
        ("WatchInvocation", False),
    ],
)
def test_guard_audits_only_mutating_calls(method: str, audited: bool) -> None:
    assert Guard.audits(method) is audited
