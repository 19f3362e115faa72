"""The regions an account uses, with what each holds."""

from __future__ import annotations

from sqlalchemy import Connection, Integer, case, func, select

from cloudassist.server.domain.model import Region
from cloudassist.server.store.tables import COMMANDS, INSTANCES, INVOCATIONS


def _invocation_regions(conn: Connection, account_id: str) -> list[str]:
    """The regions with invocations, each found by one index seek (an account may have many
    invocations and few regions)."""
    found: list[str] = []
    while True:
        conditions = [INVOCATIONS.c.account_id == account_id]
        if found:
            conditions.append(INVOCATIONS.c.region_id > found[-1])
        region = conn.execute(
            select(func.min(INVOCATIONS.c.region_id)).where(*conditions)
        ).scalar_one()
        if region is None:
            return found
        found.append(region)


def list_regions(conn: Connection, account_id: str) -> list[Region]:
    """Every region with an instance, command or invocation of the account, by region id."""
    regions: dict[str, Region] = {r: Region(r) for r in _invocation_regions(conn, account_id)}
    online = func.sum(case((INSTANCES.c.online, 1), else_=0), type_=Integer)
    for region_id, count, connected in conn.execute(
        select(INSTANCES.c.region_id, func.count(), online)
        .where(INSTANCES.c.account_id == account_id)
        .group_by(INSTANCES.c.region_id)
    ).all():
        regions[region_id] = Region(region_id, count, connected or 0)
    for region_id, count in conn.execute(
        select(COMMANDS.c.region_id, func.count())
        .where(COMMANDS.c.account_id == account_id)
        .group_by(COMMANDS.c.region_id)
    ).all():
        held = regions.get(region_id, Region(region_id))
        regions[region_id] = Region(region_id, held.instance_count, held.online_count, count)
    return [regions[r] for r in sorted(regions)]
