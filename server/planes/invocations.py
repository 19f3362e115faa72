"""The invocation plane: InvokeCommand, RunCommand, RerunInvocation, SendFile and
PreviewSchedule, without gRPC. Each makes an invocation the same way (`start`): checks its
targets, stores it with its records in one transaction and hands the tasks to the hub."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace

from cloudassist.common.clock import now_ms
from cloudassist.common.logs import about
from cloudassist.server.auth import pending_audit
from cloudassist.server.domain import ids, reasons
from cloudassist.server.domain.fields import check_instance_id, check_region, check_required
from cloudassist.server.domain.files import FileDraft, check_file
from cloudassist.server.domain.model import (
    CommandDraft,
    CommandSpec,
    Instance,
    InvocationDraft,
    InvocationSpec,
    RepeatMode,
)
from cloudassist.server.domain.rerun import Rerun, check_states, rerun_spec, rerun_targets
from cloudassist.server.domain.schedule_preview import Preview, preview_schedule
from cloudassist.server.domain.status import ExecutionState
from cloudassist.server.domain.tasks import Task, build_task
from cloudassist.server.domain.timezones import day_start_ms
from cloudassist.server.domain.validation import (
    validate_command,
    validate_file_invocation,
    validate_invocation,
)
from cloudassist.server.fleet.hub import Hub
from cloudassist.server.planes.shared import PlaneSettings, Schedules, idempotency_key
from cloudassist.server.planes.targets import check_targets, checked_targets, targets_of
from cloudassist.server.store import commands as commands_repo
from cloudassist.server.store import invocations as invocations_repo
from cloudassist.server.store.database import Database
from cloudassist.server.store.idempotency import IdempotencyKey, replay
from cloudassist.server.store.invocations import InvocationPlan
from cloudassist.server.store.invoke_inputs import invoke_inputs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DryRunTask:
    instance_id: str
    task: Task
    online: bool


@dataclass(frozen=True)
class DryRun:
    """What an invocation would run; nothing of it was stored."""

    tasks: list[DryRunTask]
    first_fire_ms: int | None


@dataclass(frozen=True)
class Started:
    """An invocation made (its ids), or rehearsed (`dry_run`, and no ids)."""

    invoke_id: str = ""
    command_id: str = ""
    dry_run: DryRun | None = None


class InvocationPlane:
    def __init__(
        self, db: Database, hub: Hub, settings: PlaneSettings, schedules: Schedules
    ) -> None:
        self._db = db
        self._hub = hub
        self._settings = settings
        self._limits = settings.limits
        self._schedules = schedules

    async def invoke(
        self, account_id: str, draft: InvocationDraft, client_token: str, dry_run: bool = False
    ) -> Started:
        check_region(draft.region_id)
        check_required(draft.command_id, "command_id", reasons.MISSING_COMMAND_ID)
        key = idempotency_key(account_id, draft.region_id, "InvokeCommand", client_token, draft)
        if dry_run:
            key = None  # a dry run neither replays nor claims a client token
        found: Mapping[str, Instance] | None = None
        if draft.resource_tags or len(draft.instance_ids) > self._limits.instances_per_invocation:
            # Targets chosen by tag, or too many to look up: one step at a time.
            previous = await self._replay(key)
            if previous is not None:
                return Started(invoke_id=previous["invoke_id"])
            command = await self._db.read(
                commands_repo.get_command, account_id, draft.region_id, draft.command_id
            )
            draft = await targets_of(self._db, account_id, draft)
        else:
            # One read: the token's first result, else the command and the instances named.
            inputs = await self._db.read(
                invoke_inputs,
                key,
                account_id,
                draft.region_id,
                draft.command_id,
                draft.instance_ids,
            )
            if isinstance(inputs, dict):
                return Started(invoke_id=inputs["invoke_id"])
            command, found = inputs
        spec = validate_invocation(
            draft, command.command_id, command.spec, self._limits, self._schedules.check_frequency
        )
        return await self.start(account_id, spec, key, dry_run=dry_run, found=found)

    async def _replay(self, key: IdempotencyKey | None) -> dict[str, str] | None:
        """What the client token's first request made (no read without a token)."""
        return None if key is None else await self._db.read(replay, key)

    async def run(
        self,
        account_id: str,
        command: CommandDraft,
        invocation: InvocationDraft,
        keep_command: bool,
        client_token: str,
        dry_run: bool = False,
    ) -> Started:
        """RunCommand: a command (saved only with keep_command) invoked in one step."""
        if not command.name:
            command = CommandDraft(**{**asdict(command), "name": "run-command"})
        command_spec = validate_command(command, self._limits)
        key = idempotency_key(
            account_id,
            command_spec.region_id,
            "RunCommand",
            client_token,
            command,
            invocation,
            keep_command,
        )
        if dry_run:
            key = None
        previous = await self._replay(key)
        if previous is not None:
            return Started(previous["invoke_id"], previous["command_id"])
        command_id = ids.command_id()
        invocation = await targets_of(self._db, account_id, invocation)
        spec = validate_invocation(
            invocation, command_id, command_spec, self._limits, self._schedules.check_frequency
        )
        return await self.start(
            account_id,
            spec,
            key,
            new_command=command_spec if keep_command else None,
            dry_run=dry_run,
        )

    async def rerun(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        states: Sequence[ExecutionState],
        instance_ids: Sequence[str],
        client_token: str,
    ) -> Rerun:
        """RerunInvocation: the source's content and options, once, on its failed instances
        (server/domain/rerun.py), made as InvokeCommand makes an invocation."""
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        chosen = check_states(states)
        for instance_id in instance_ids:
            check_instance_id(instance_id, self._limits)
        key = idempotency_key(
            account_id,
            region_id,
            "RerunInvocation",
            client_token,
            invoke_id,
            [s.value for s in chosen],
            sorted(set(instance_ids)),
        )
        previous = await self._replay(key)
        if previous is not None:  # a retry: what the first call made
            made = await self._db.read(
                invocations_repo.get_invocation, account_id, region_id, previous["invoke_id"]
            )
            return Rerun(made.invoke_id, made.spec.command_id, made.spec.instance_ids)
        source = await self._db.read(
            invocations_repo.get_invocation, account_id, region_id, invoke_id
        )
        targets = rerun_targets(source, chosen, instance_ids)
        started = await self.start(account_id, rerun_spec(source.spec, targets), key)
        return Rerun(started.invoke_id, started.command_id, tuple(sorted(targets)))

    async def send_file(
        self,
        account_id: str,
        draft: FileDraft,
        targets: InvocationDraft,
        timeout_seconds: int,
        client_token: str,
    ) -> str:
        """SendFile: an invocation whose tasks write the file on each instance."""
        check_region(targets.region_id)
        key = idempotency_key(
            account_id, targets.region_id, "SendFile", client_token, draft, targets, timeout_seconds
        )
        previous = await self._replay(key)
        if previous is not None:
            return previous["invoke_id"]
        file, content = check_file(draft)
        targets = await targets_of(self._db, account_id, targets)
        spec = validate_file_invocation(
            targets.region_id, targets.instance_ids, file, content, timeout_seconds, self._limits
        )
        started = await self.start(account_id, spec, key)
        return started.invoke_id

    def preview_schedule(
        self, region_id: str, frequency: str, timeout_seconds: int | None, count: int
    ) -> Preview:
        """PreviewSchedule: a frequency's next fire times, checked as InvokeCommand checks it."""
        return preview_schedule(
            region_id,
            frequency,
            timeout_seconds,
            count,
            limits=self._limits,
            default_timezone=self._settings.default_timezone,
            now_ms=now_ms(),
        )

    async def start(
        self,
        account_id: str,
        spec: InvocationSpec,
        key: IdempotencyKey | None,
        new_command: CommandSpec | None = None,
        dry_run: bool = False,
        found: Mapping[str, Instance] | None = None,
    ) -> Started:
        """Stores the invocation; `found`: its instances, when already read."""
        if found is None:
            targets = await check_targets(self._db, account_id, spec)
        else:
            targets = checked_targets(spec, found)
        now = now_ms()
        schedule = None
        if spec.repeat_mode is RepeatMode.PERIOD:
            schedule = self._schedules.schedule_for(spec.frequency, spec.timeout_seconds, now)
        plan = InvocationPlan(
            account_id=account_id,
            invoke_id=ids.invoke_id(),
            spec=spec,
            # A scheduled invocation gets its records when it fires, a reboot-mode one when
            # its instances boot.
            record_ids=(
                {}
                if schedule is not None or spec.repeat_mode.on_reboot
                else {instance_id: ids.record_id() for instance_id in spec.instance_ids}
            ),
            now_ms=now,
            day_start_ms=day_start_ms(now, self._settings.default_timezone),
            daily_quota=self._limits.invocations_per_region_per_day,
            delivery_deadline_ms=now + int(self._settings.delivery_timeout_seconds * 1000),
            output_limit=self._limits.output_bytes_per_record,
            idempotency=key,
            new_command=new_command,
            command_quota=self._limits.commands_per_region,
            one_shot=(
                spec.repeat_mode is not RepeatMode.EVERY_REBOOT
                and (schedule is None or schedule.one_shot)
            ),
            next_fire_ms=schedule.first_fire(now) if schedule is not None else None,
        )
        if dry_run:
            # Every check of the transaction (quotas included), then nothing kept.
            await self._db.rehearse(invocations_repo.create_invocation, plan)
            return Started(dry_run=_dry_run(plan, targets))
        ticket = pending_audit.get()
        if ticket is not None:
            plan = replace(plan, audit=ticket.entry)
        result, effects = await self._db.write(invocations_repo.create_invocation, plan)
        if ticket is not None:
            ticket.written = True
        if plan.next_fire_ms is not None:
            self._schedules.changed()
        log.info(
            "invocation created",
            extra=about(
                invoke_id=result["invoke_id"],
                command_id=result["command_id"],
                account_id=account_id,
                instances=len(spec.instance_ids),
            ),
        )
        # An agent connected to another server gets it from that server; one that is not
        # connected gets it when it connects (or it is ABORTED).
        self._hub.carry_out(effects)
        return Started(invoke_id=result["invoke_id"], command_id=result["command_id"])


def _dry_run(plan: InvocationPlan, targets: Mapping[str, Instance]) -> DryRun:
    spec = plan.spec
    return DryRun(
        tasks=[
            DryRunTask(
                instance_id,
                build_task("", instance_id, plan.invoke_id, spec, plan.output_limit),
                targets[instance_id].online,
            )
            for instance_id in spec.instance_ids
        ],
        first_fire_ms=plan.next_fire_ms,
    )
