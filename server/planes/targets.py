"""The instances an invocation runs on: those named or those with its resource tags, each
checked to exist in the region and to run the command's type."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from cloudassist.server.domain.fields import check_instances_found
from cloudassist.server.domain.model import Instance, InvocationDraft, InvocationSpec, runs_on
from cloudassist.server.domain.tags import check_selector
from cloudassist.server.store import tags as tags_repo
from cloudassist.server.store.database import Database
from cloudassist.server.store.instances import find_instances


async def targets_of(db: Database, account_id: str, draft: InvocationDraft) -> InvocationDraft:
    """The draft with its instances: those named, or those with its resource_tags."""
    if not draft.resource_tags:
        return draft
    if draft.instance_ids:
        raise InvalidArgument(
            reasons.TARGETS_CONFLICT,
            "resource_tags: give instance_ids or resource_tags, not both",
            field="resource_tags",
        )
    selector = check_selector(draft.resource_tags, "resource_tags")
    found = await db.read(tags_repo.select_instances, account_id, draft.region_id, selector)
    if not found:
        raise NotFound(
            reasons.NO_INSTANCE_MATCHED,
            f"resource_tags: no instance in region {draft.region_id} has "
            + ", ".join(f"{k}={v}" if v else k for k, v in selector),
            field="resource_tags",
        )
    # The count is checked against the per-invocation limit like named instances.
    return replace(draft, instance_ids=tuple(found))


async def check_targets(
    db: Database, account_id: str, spec: InvocationSpec
) -> Mapping[str, Instance]:
    """Every instance exists in the region and runs this command type."""
    found = await db.read(find_instances, account_id, spec.region_id, spec.instance_ids)
    return checked_targets(spec, found)


def checked_targets(spec: InvocationSpec, found: Mapping[str, Instance]) -> Mapping[str, Instance]:
    """`found` (the instances read for the spec's ids, or for more ids), when every instance of
    the spec is in it and runs the spec's command type."""
    check_instances_found(spec.instance_ids, found, spec.region_id)
    for instance_id in spec.instance_ids:
        instance = found[instance_id]
        if not runs_on(spec.command_type, instance.os_type, instance.extra_command_types):
            raise FailedPrecondition(
                reasons.INSTANCE_NOT_MATCH,
                f"instance_ids: {instance_id} is a {instance.os_type.value} instance and "
                f"cannot run a {spec.command_type.value} command",
                field="instance_ids",
                metadata={"instance_id": instance_id, "os_type": instance.os_type.value},
            )
    return found
