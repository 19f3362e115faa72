"""Instance tags: set, removed, reported by agents, and used to select instances."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence

from sqlalchemy import (
    BindParameter,
    Column,
    Connection,
    Table,
    bindparam,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.sql.elements import ColumnElement

from cloudassist.server.domain.fields import check_instances_found
from cloudassist.server.domain.tags import TagPairs, merged_tags
from cloudassist.server.store.tables import INSTANCE_TAGS, INSTANCES

API = "api"
AGENT = "agent"

_TAGS_OF = select(INSTANCE_TAGS.c.instance_id, INSTANCE_TAGS.c.key, INSTANCE_TAGS.c.value).where(
    INSTANCE_TAGS.c.instance_id.in_(bindparam("p_instance_ids", expanding=True))
)


def tags_of(conn: Connection, instance_ids: Sequence[str]) -> dict[str, dict[str, str]]:
    """Each instance's tags (an API tag over the agent's for the same key)."""
    found: dict[str, dict[str, str]] = defaultdict(dict)
    if not instance_ids:
        return found
    rows = conn.execute(_TAGS_OF, {"p_instance_ids": list(instance_ids)}).all()
    for instance_id, key, value in rows:
        found[instance_id][key] = value
    return found


# A tag's key or value in a selector: text, or a bound parameter in a statement built once.
TagTerm = str | BindParameter[str]


def tagged_with(
    selector: Sequence[tuple[TagTerm, TagTerm]],
    owner: Column[str],
    tags: Table,
    tag_owner: Column[str],
) -> list[ColumnElement[bool]]:
    """Conditions: the row whose id is `owner` has every tag of `selector` in the table
    `tags` (key, value, and `tag_owner` naming the row); an empty value matches any."""
    conditions: list[ColumnElement[bool]] = []
    for key, value in selector:
        matching = select(tag_owner).where(tags.c.key == key)
        if not isinstance(value, str) or value:
            matching = matching.where(tags.c.value == value)
        conditions.append(owner.in_(matching))
    return conditions


def having_tags(selector: TagPairs) -> list[ColumnElement[bool]]:
    """Conditions on INSTANCES: the instance has every tag of `selector`."""
    return tagged_with(
        selector, INSTANCES.c.instance_id, INSTANCE_TAGS, INSTANCE_TAGS.c.instance_id
    )


def _owned(conn: Connection, account_id: str, region_id: str, instance_ids: Sequence[str]) -> None:
    found = set(
        conn.execute(
            select(INSTANCES.c.instance_id).where(
                INSTANCES.c.account_id == account_id,
                INSTANCES.c.region_id == region_id,
                INSTANCES.c.instance_id.in_(list(instance_ids)),
            )
        ).scalars()
    )
    check_instances_found(instance_ids, found, region_id)


def tag_instances(
    conn: Connection,
    account_id: str,
    region_id: str,
    instance_ids: Sequence[str],
    tags: Mapping[str, str],
) -> None:
    _owned(conn, account_id, region_id, instance_ids)
    current = tags_of(conn, instance_ids)
    for instance_id in instance_ids:
        merged_tags(current.get(instance_id, {}), tags)  # the limit, before anything is written
    for instance_id in instance_ids:
        existing = current.get(instance_id, {})
        for key, value in tags.items():
            if key in existing:
                conn.execute(
                    update(INSTANCE_TAGS)
                    .where(INSTANCE_TAGS.c.instance_id == instance_id, INSTANCE_TAGS.c.key == key)
                    .values(value=value, source=API)
                )
            else:
                conn.execute(
                    insert(INSTANCE_TAGS).values(
                        instance_id=instance_id, key=key, value=value, source=API
                    )
                )


def untag_instances(
    conn: Connection,
    account_id: str,
    region_id: str,
    instance_ids: Sequence[str],
    keys: Sequence[str],
) -> None:
    _owned(conn, account_id, region_id, instance_ids)
    conn.execute(
        delete(INSTANCE_TAGS).where(
            INSTANCE_TAGS.c.instance_id.in_(list(instance_ids)),
            INSTANCE_TAGS.c.key.in_(list(keys)),
        )
    )


_DROP_AGENT_TAGS = delete(INSTANCE_TAGS).where(
    INSTANCE_TAGS.c.instance_id == bindparam("p_instance_id"), INSTANCE_TAGS.c.source == AGENT
)
_TAG_KEYS = select(INSTANCE_TAGS.c.key).where(
    INSTANCE_TAGS.c.instance_id == bindparam("p_instance_id")
)
_ADD_TAG = insert(INSTANCE_TAGS)


def replace_agent_tags(conn: Connection, instance_id: str, tags: Mapping[str, str]) -> None:
    """The tags an agent reports in its hello replace those it reported before; keys set
    through the API keep their value."""
    conn.execute(_DROP_AGENT_TAGS, {"p_instance_id": instance_id})
    if not tags:
        return
    taken = set(conn.execute(_TAG_KEYS, {"p_instance_id": instance_id}).scalars())
    rows = [
        {"instance_id": instance_id, "key": k, "value": v, "source": AGENT}
        for k, v in tags.items()
        if k not in taken
    ]
    if rows:
        conn.execute(_ADD_TAG, rows)


def select_instances(
    conn: Connection, account_id: str, region_id: str, selector: TagPairs
) -> list[str]:
    """The ids of the region's instances with every tag of `selector`, in id order."""
    return list(
        conn.execute(
            select(INSTANCES.c.instance_id)
            .where(
                INSTANCES.c.account_id == account_id,
                INSTANCES.c.region_id == region_id,
                *having_tags(selector),
            )
            .order_by(INSTANCES.c.instance_id)
        ).scalars()
    )
