"""Accounts and registered instances for the store tests (real SQLite, no server)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from cloudassist.server.domain.agents import AgentIdentity, HeldTask
from cloudassist.server.domain.model import OsType
from cloudassist.server.domain.reports import Effects
from cloudassist.server.store import schema, security
from cloudassist.server.store.engine import make_engine
from cloudassist.server.store.hello import agent_hello

REGION = "cn-hangzhou"
DAY_MS = 86_400_000


def new_engine(directory: Path) -> Engine:
    engine = make_engine(f"sqlite:///{directory / 'store.db'}")
    schema.upgrade(engine)
    return engine


@dataclass
class Tenant:
    """An account, an activation of it in `region_id`, and its registered instances' secrets."""

    engine: Engine
    account_id: str
    region_id: str
    activation_id: str
    code: str
    secrets: dict[str, str] = field(default_factory=dict)

    def register(self, instance_id: str, now_ms: int) -> str:
        """Registers `instance_id` with the activation; returns (and keeps) its secret."""
        with self.engine.begin() as conn:
            got, secret, region_id = security.register_instance(
                conn,
                self.activation_id,
                self.code,
                instance_id,
                OsType.LINUX,
                f"host-{instance_id}",
                now_ms,
            )
        assert (got, region_id) == (instance_id, self.region_id)
        self.secrets[instance_id] = secret
        return secret

    def identity(self, instance_id: str, secret: str | None = None) -> AgentIdentity:
        return AgentIdentity(
            instance_id,
            self.secrets[instance_id] if secret is None else secret,
            OsType.LINUX,
            f"host-{instance_id}",
            "1.0",
        )

    def hello(
        self,
        instance_id: str,
        now_ms: int,
        held: Sequence[HeldTask] = (),
        secret: str | None = None,
    ) -> tuple[Effects, list[tuple[str, int, bool]]]:
        """The instance's agent connects (with its own secret unless `secret` is given)."""
        with self.engine.begin() as conn:
            return agent_hello(conn, self.identity(instance_id, secret), list(held), now_ms)


def new_tenant(
    engine: Engine,
    name: str,
    now_ms: int,
    region_id: str = REGION,
    max_registrations: int = 100,
    admin: bool = False,
) -> Tenant:
    """A new account with an activation valid for a day from `now_ms`."""
    with engine.begin() as conn:
        account = security.create_account(conn, name, admin, now_ms)
        activation, code = security.create_activation(
            conn,
            account.account_id,
            region_id,
            f"instances of {name}",
            max_registrations,
            now_ms + DAY_MS,
            now_ms,
        )
    return Tenant(engine, account.account_id, region_id, activation.activation_id, code)
