"""Admin keys that survive any one server (server/store/admin_keys.py, the key file's format
and reading): a key the operator provides, and a key issued straight into the database."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlalchemy import Engine, select

from cloudassist.server.admin_key import read_key_file
from cloudassist.server.domain.credentials import parse_provided_key, split_token
from cloudassist.server.domain.errors import Unauthenticated
from cloudassist.server.domain.pagination import Page
from cloudassist.server.store import security
from cloudassist.server.store.admin_keys import (
    ISSUED_KEY_METHOD,
    PROVIDED_KEY_METHOD,
    ProvidedKey,
    ProvidedKeyError,
    admin_account,
    issue_admin_key,
    register_provided_key,
)
from cloudassist.server.store.tables import ACCOUNTS, API_KEYS

NOW = 1_700_000_000_000
PAGE = Page(size=50, after_id=None, fingerprint="test")
PEER = "local:ops@host"


def provided_key() -> tuple[str, str]:
    return f"k-{secrets.token_hex(10)}", secrets.token_hex(32)


def _admin_of(engine: Engine, key_id: str, secret: str) -> bool:
    with engine.connect() as conn:
        return security.authenticate_key(conn, key_id, secret).admin


def _audit(engine: Engine, method: str) -> list[tuple[str, tuple[str, ...], str]]:
    with engine.connect() as conn:
        entries, _ = security.list_audit(conn, "", method, PAGE)
    return [(e.key_id, e.resource_ids, e.peer) for e in entries]


def test_a_provided_key_on_a_new_database_makes_the_admin_account_with_it_and_no_other_key(
    engine: Engine,
) -> None:
    key_id, secret = provided_key()
    with engine.begin() as conn:
        assert register_provided_key(conn, key_id, secret, NOW, PEER) is ProvidedKey.CREATED_ADMIN
    assert _admin_of(engine, key_id, secret)
    with engine.connect() as conn:
        assert [r.name for r in conn.execute(select(ACCOUNTS)).all()] == ["admin"]
        assert [r.key_id for r in conn.execute(select(API_KEYS)).all()] == [key_id]
    # A server started later without the file makes no key of its own.
    with engine.begin() as conn:
        assert security.bootstrap_admin(conn, NOW) is None
    assert _audit(engine, PROVIDED_KEY_METHOD) == [(key_id, (key_id,), PEER)]


def test_a_provided_key_is_added_to_the_admin_account_of_a_database_that_has_one(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        first = security.bootstrap_admin(conn, NOW)
    assert first is not None
    key_id, secret = provided_key()
    with engine.begin() as conn:
        assert register_provided_key(conn, key_id, secret, NOW, PEER) is ProvidedKey.REGISTERED
        admin = admin_account(conn)
    assert admin is not None
    assert admin.name == "admin"
    assert _admin_of(engine, key_id, secret)
    first_id, first_secret = split_token(first) or ("", "")
    assert _admin_of(engine, first_id, first_secret)


def test_registering_the_same_provided_key_again_changes_nothing(engine: Engine) -> None:
    key_id, secret = provided_key()
    for outcome in (ProvidedKey.CREATED_ADMIN, ProvidedKey.KNOWN, ProvidedKey.KNOWN):
        with engine.begin() as conn:
            assert register_provided_key(conn, key_id, secret, NOW, PEER) is outcome
    with engine.connect() as conn:
        assert len(conn.execute(select(API_KEYS)).all()) == 1
    assert len(_audit(engine, PROVIDED_KEY_METHOD)) == 1


def test_a_revoked_provided_key_stays_revoked(engine: Engine) -> None:
    key_id, secret = provided_key()
    with engine.begin() as conn:
        register_provided_key(conn, key_id, secret, NOW, PEER)
        security.revoke_api_key(conn, key_id, NOW + 1)
    with engine.begin() as conn:
        assert register_provided_key(conn, key_id, secret, NOW + 2, PEER) is ProvidedKey.REVOKED
    with engine.connect() as conn, pytest.raises(Unauthenticated):
        security.authenticate_key(conn, key_id, secret)


def test_a_provided_key_whose_id_is_another_keys_is_refused(engine: Engine) -> None:
    key_id, secret = provided_key()
    with engine.begin() as conn:
        register_provided_key(conn, key_id, secret, NOW, PEER)
    with engine.begin() as conn, pytest.raises(ProvidedKeyError, match=f"key id {key_id}"):
        register_provided_key(conn, key_id, secrets.token_hex(32), NOW, PEER)


def test_a_non_admin_key_cannot_become_the_admin_key(engine: Engine) -> None:
    with engine.begin() as conn:
        security.bootstrap_admin(conn, NOW)
        tenant = security.create_account(conn, "tenant", False, NOW)
        key, token = security.create_api_key(conn, tenant.account_id, "", NOW)
    key_id, secret = split_token(token) or ("", "")
    with engine.begin() as conn, pytest.raises(ProvidedKeyError):
        register_provided_key(conn, key_id, secret, NOW, PEER)
    assert not _admin_of(engine, key.key_id, secret)


def test_an_issued_admin_key_works_and_is_audited(engine: Engine) -> None:
    with engine.begin() as conn:
        security.bootstrap_admin(conn, NOW)
        security.create_account(conn, "second-admin", True, NOW + 1)
        account, key, token = issue_admin_key(conn, "lost the old one", NOW + 2, PEER)
    # The first-start admin account, not a later admin account.
    assert account.name == "admin"
    assert (key.account_id, key.description) == (account.account_id, "lost the old one")
    key_id, secret = split_token(token) or ("", "")
    assert key_id == key.key_id
    assert _admin_of(engine, key_id, secret)
    assert _audit(engine, ISSUED_KEY_METHOD) == [(key_id, (key_id,), PEER)]


def test_issuing_an_admin_key_on_a_database_without_accounts_makes_the_admin_account(
    engine: Engine,
) -> None:
    with engine.begin() as conn:
        account, _, token = issue_admin_key(conn, "", NOW, PEER)
    assert (account.name, account.admin) == ("admin", True)
    assert _admin_of(engine, *(split_token(token) or ("", "")))


def test_the_admin_account_is_the_oldest_admin_when_none_is_named_admin(engine: Engine) -> None:
    with engine.begin() as conn:
        security.create_account(conn, "ops-late", True, NOW + 5)
        first = security.create_account(conn, "ops", True, NOW)
        security.create_account(conn, "tenant", False, NOW - 5)
        assert admin_account(conn) == first


@pytest.mark.parametrize(
    "text",
    [
        "",
        "k-abc",
        "k-abc." + "0" * 63,
        "k-abc." + "0" * 65,
        "k-ABC." + "0" * 64,
        "x-abc." + "0" * 64,
        "k-abc." + "G" * 64,
        "k-abc.00" + "0" * 62 + "\nk-abc." + "0" * 64,
        "k-" + "a" * 63 + "." + "0" * 64,
    ],
)
def test_a_provided_key_of_another_shape_is_refused_naming_the_rule(text: str) -> None:
    with pytest.raises(ValueError, match=r"one line '<key id>\.<secret>'"):
        parse_provided_key(text)


def test_a_provided_key_may_end_with_a_newline(tmp_path: Path) -> None:
    key_id, secret = provided_key()
    path = tmp_path / "admin.key"
    path.write_text(f"{key_id}.{secret}\n")
    assert read_key_file(path) == (key_id, secret)


def test_reading_a_bad_key_file_names_the_file_and_never_its_content(tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    path.write_text("k-abc.not-hex-but-a-secret\n")
    with pytest.raises(ValueError) as bad:
        read_key_file(path)
    assert str(bad.value).startswith(f"--admin-key-file {path}: expected one line")
    assert "not-hex-but-a-secret" not in str(bad.value)
    with pytest.raises(ValueError, match=r"cannot read it: No such file or directory"):
        read_key_file(tmp_path / "missing")
