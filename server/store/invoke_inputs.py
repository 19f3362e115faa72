"""InvokeCommand's reads in one transaction: the client token's first result, else the command
and the instances the request names."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from cloudassist.server.domain.model import Command, Instance
from cloudassist.server.store.commands import get_command
from cloudassist.server.store.idempotency import IdempotencyKey, replay
from cloudassist.server.store.instances import find_instances


def invoke_inputs(
    conn: Connection,
    key: IdempotencyKey | None,
    account_id: str,
    region_id: str,
    command_id: str,
    instance_ids: Sequence[str],
) -> dict[str, str] | tuple[Command, dict[str, Instance]]:
    """The token's first result (a retry), else the command (NotFound when there is none) and
    the instances found of `instance_ids`."""
    previous = replay(conn, key)
    if previous is not None:
        return previous
    command = get_command(conn, account_id, region_id, command_id)
    return command, find_instances(conn, account_id, region_id, instance_ids)
