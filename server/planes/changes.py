"""The change plane: StopInvocation and ModifyInvocationAttribute, without gRPC: what can be
done to an invocation once it is made."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from cloudassist.common.clock import now_ms
from cloudassist.common.logs import about
from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import FailedPrecondition
from cloudassist.server.domain.fields import check_instance_id, check_region, check_required
from cloudassist.server.domain.model import RepeatMode
from cloudassist.server.domain.validation import InvocationChange, apply_invocation_change
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.planes.shared import PlaneSettings, Schedules
from cloudassist.server.planes.targets import check_targets
from cloudassist.server.store import invocation_changes as changes_repo
from cloudassist.server.store import invocations as invocations_repo
from cloudassist.server.store.database import Database

log = logging.getLogger(__name__)


class ChangePlane:
    def __init__(
        self, db: Database, hub: Hub, settings: PlaneSettings, schedules: Schedules
    ) -> None:
        self._db = db
        self._hub = hub
        self._settings = settings
        self._limits = settings.limits
        self._schedules = schedules

    async def stop(
        self, account_id: str, region_id: str, invoke_id: str, instance_ids: Sequence[str]
    ) -> None:
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        for instance_id in instance_ids:
            check_instance_id(instance_id, self._limits)
        now = now_ms()
        effects = await self._db.write(
            changes_repo.stop_invocation,
            account_id,
            region_id,
            invoke_id,
            list(instance_ids),
            now,
            now + int(self._settings.stop_grace_seconds * 1000),
        )
        if len(instance_ids) == 1:
            on, one = instance_ids[0], {"instance_id": instance_ids[0]}
        else:
            on, one = (f"{len(instance_ids)} instances" if instance_ids else "every instance"), {}
        log.info(
            "stop requested on %s",
            on,
            extra=about(invoke_id=invoke_id, account_id=account_id, **one),
        )
        self._hub.carry_out(effects)

    async def modify_invocation(
        self, account_id: str, region_id: str, invoke_id: str, change: InvocationChange
    ) -> None:
        """ModifyInvocationAttribute: a periodic invocation's next fires run the new content,
        parameters or frequency, and on the added instances too; nothing is stopped."""
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        for instance_id in change.added_instance_ids:
            check_instance_id(instance_id, self._limits)
        invocation = await self._db.read(
            invocations_repo.get_invocation, account_id, region_id, invoke_id
        )
        if invocation.spec.repeat_mode is not RepeatMode.PERIOD:
            raise FailedPrecondition(
                reasons.NOT_PERIODIC,
                f"invoke_id: invocation {invoke_id} is not periodic; only a periodic one can "
                "be changed",
                field="invoke_id",
            )
        spec = apply_invocation_change(
            invocation.spec, change, self._limits, self._schedules.check_frequency
        )
        await check_targets(self._db, account_id, spec)
        now = now_ms()
        schedule = None
        if change.frequency is not None:
            # Anchored as the scheduler anchors it: at the invocation's creation.
            new = self._schedules.schedule_for(
                spec.frequency, spec.timeout_seconds, invocation.created_ms
            )
            schedule = (new.next_after(now), new.one_shot)
        effects = await self._db.write(
            changes_repo.modify_periodic,
            account_id,
            region_id,
            invoke_id,
            spec,
            change.added_instance_ids,
            schedule,
            now,
        )
        if schedule is not None:
            self._schedules.changed()
        self._hub.carry_out(effects)
