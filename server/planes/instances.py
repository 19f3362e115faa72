"""The instance plane: every InstanceService call (instances, their tags, regions), without
gRPC."""

from __future__ import annotations

from collections.abc import Sequence

from cloudassist.common.clock import now_ms
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.fields import check_instance_id, check_region
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import Instance, Region
from cloudassist.server.domain.pagination import parse_page
from cloudassist.server.domain.tags import check_selector, check_tags
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.planes.listing import Listing, listing
from cloudassist.server.store import instances as instances_repo
from cloudassist.server.store import regions as regions_repo
from cloudassist.server.store import tags as tags_repo
from cloudassist.server.store.database import Database


class InstancePlane:
    def __init__(self, db: Database, hub: Hub, limits: Limits) -> None:
        self._db = db
        self._hub = hub
        self._limits = limits

    async def describe_regions(self, account_id: str) -> list[Region]:
        return await self._db.read(regions_repo.list_regions, account_id)

    async def describe_instances(
        self,
        account_id: str,
        region_id: str,
        instance_ids: Sequence[str],
        page_size: int,
        page_token: str,
        tags: Sequence[tuple[str, str]] = (),
    ) -> Listing[Instance]:
        check_region(region_id)
        for instance_id in instance_ids:
            check_instance_id(instance_id, self._limits)
        selector = check_selector(tags, "tags")
        filters = (region_id, tuple(instance_ids), selector)
        page = parse_page("instances", filters, page_size, page_token)
        items, total = await self._db.read(
            instances_repo.list_instances, account_id, region_id, list(instance_ids), page, selector
        )
        return listing(page, items, total, instances_repo.instance_page_key)

    async def tag_instances(
        self,
        account_id: str,
        region_id: str,
        instance_ids: Sequence[str],
        tags: Sequence[tuple[str, str]],
    ) -> None:
        check_region(region_id)
        ids = self._tag_targets(instance_ids)
        checked = check_tags(tags)
        if not checked:
            raise InvalidArgument(
                reasons.TAG_KEY_MALFORMED, "tags: at least one is required", field="tags"
            )
        await self._db.write(tags_repo.tag_instances, account_id, region_id, ids, checked)

    async def untag_instances(
        self, account_id: str, region_id: str, instance_ids: Sequence[str], keys: Sequence[str]
    ) -> None:
        check_region(region_id)
        ids = self._tag_targets(instance_ids)
        if not keys:
            raise InvalidArgument(
                reasons.TAG_KEY_MALFORMED, "keys: at least one is required", field="keys"
            )
        check_tags(((k, "") for k in keys), "keys")
        await self._db.write(tags_repo.untag_instances, account_id, region_id, ids, list(keys))

    async def deregister_instance(self, account_id: str, region_id: str, instance_id: str) -> None:
        check_region(region_id)
        check_instance_id(instance_id, self._limits, field="instance_id")
        effects = await self._db.write(
            instances_repo.deregister_instance, account_id, region_id, instance_id, now_ms()
        )
        self._hub.disconnect(instance_id)
        self._hub.carry_out(effects)

    def _tag_targets(self, instance_ids: Sequence[str]) -> list[str]:
        if not instance_ids:
            raise InvalidArgument(
                reasons.MISSING_INSTANCE_IDS,
                "instance_ids: at least one is required",
                field="instance_ids",
            )
        for instance_id in instance_ids:
            check_instance_id(instance_id, self._limits)
        return list(dict.fromkeys(instance_ids))
