"""The command plane: what each CommandService and InstanceService call does, without gRPC.

It validates with the domain rules, reads and writes through the store, and hands tasks and
cancels to the hub. The servicers in `server.api` only translate protobuf to these calls.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import tzinfo
from typing import TypeVar

from server.auth import pending_audit
from server.clock import now_ms
from server.domain import ids, reasons
from server.domain.errors import FailedPrecondition, InvalidArgument, NotFound
from server.domain.files import FileDraft, FileSpec, check_file
from server.domain.limits import Limits
from server.domain.model import (
    Command,
    CommandDraft,
    CommandPatch,
    CommandSpec,
    CommandType,
    Instance,
    Invocation,
    InvocationDraft,
    InvocationSpec,
    OutputSlice,
    Record,
    Region,
    RepeatMode,
    runs_on,
)
from server.domain.pagination import parse_page
from server.domain.rerun import Rerun, check_states, rerun_spec, rerun_targets
from server.domain.schedule import Schedule, parse_frequency
from server.domain.status import ExecutionState, InvokeStatus
from server.domain.tags import check_selector, check_tags
from server.domain.tasks import Task, build_task
from server.domain.timezones import day_start_ms
from server.domain.validation import (
    InvocationChange,
    apply_invocation_change,
    apply_patch,
    check_client_token,
    check_instance_id,
    check_instances_found,
    check_name_filter,
    check_region,
    check_required,
    validate_command,
    validate_file_invocation,
    validate_invocation,
)
from server.hub import Hub
from server.listing import Listing, listing
from server.logs import about
from server.store import agents as agents_repo
from server.store import commands as commands_repo
from server.store import invocations as invocations_repo
from server.store import regions as regions_repo
from server.store import tags as tags_repo
from server.store.database import Database
from server.store.idempotency import IdempotencyKey, replay
from server.store.invocations import InvocationPlan, RecordProgress
from server.store.output import read_range

T = TypeVar("T")

log = logging.getLogger(__name__)

MAX_OUTPUT_READ = 3 * 1024 * 1024
DEFAULT_OUTPUT_READ = 1024 * 1024
WATCH_CHUNK = 1024 * 1024
# A watcher reads the database at most this often (seconds).
WATCH_READ_INTERVAL = 0.01


@dataclass(frozen=True)
class PlaneSettings:
    limits: Limits
    default_timezone: tzinfo
    delivery_timeout_seconds: float = 60.0
    # How long a STOPPING record waits for the agent to confirm the kill.
    stop_grace_seconds: float = 15.0
    # How long watchers wait for an agent's last output after the server ended a record.
    output_grace_seconds: float = 10.0


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


@dataclass(frozen=True)
class OutputEvent:
    instance_id: str
    record_id: str
    offset: int
    data: bytes


@dataclass(frozen=True)
class StateEvent:
    record: Record
    invocation_status: InvokeStatus


WatchEvent = OutputEvent | StateEvent


def _request_hash(*parts: object) -> str:
    def default(value: object) -> object:
        if isinstance(value, bytes):
            return base64.b64encode(value).decode()
        raise TypeError(type(value))

    text = json.dumps(
        [asdict(p) if hasattr(p, "__dataclass_fields__") else p for p in parts],  # type: ignore[call-overload]
        sort_keys=True,
        default=default,
    )
    return hashlib.sha256(text.encode()).hexdigest()


class CommandPlane:
    def __init__(self, db: Database, hub: Hub, settings: PlaneSettings) -> None:
        self._db = db
        self._hub = hub
        self._settings = settings
        self._limits = settings.limits
        # Told when an invocation's next fire time is set or changed (the scheduler sleeps
        # until the earliest one it knows).
        self.schedules_changed: Callable[[], None] = lambda: None

    # Commands ---------------------------------------------------------------------------

    async def create_command(self, account_id: str, draft: CommandDraft, client_token: str) -> str:
        spec = validate_command(draft, self._limits)
        key = self._idempotency_key(
            account_id, spec.region_id, "CreateCommand", client_token, draft
        )
        return await self._db.write(
            commands_repo.create_command,
            account_id,
            ids.command_id(),
            spec,
            now_ms(),
            self._limits.commands_per_region,
            key,
        )

    async def modify_command(
        self, account_id: str, region_id: str, command_id: str, patch: CommandPatch
    ) -> None:
        check_region(region_id)
        check_required(command_id, "command_id", reasons.MISSING_COMMAND_ID)
        await self._db.write(
            commands_repo.modify_command,
            account_id,
            region_id,
            command_id,
            lambda spec: apply_patch(spec, patch, self._limits),
        )

    async def describe_commands(
        self,
        account_id: str,
        region_id: str,
        command_id: str,
        name: str,
        command_type: CommandType | None,
        page_size: int,
        page_token: str,
        tags: Sequence[tuple[str, str]] = (),
    ) -> Listing[Command]:
        check_region(region_id)
        check_name_filter(name, "name", self._limits)
        selector = check_selector(tags, "tags")
        filters = (region_id, command_id, name, command_type, selector)
        page = parse_page("commands", filters, page_size, page_token)
        items, total = await self._db.read(
            commands_repo.list_commands,
            account_id,
            region_id,
            command_id,
            name,
            command_type,
            page,
            selector,
        )
        return listing(page, items, total, lambda c: c.command_id)

    async def delete_command(self, account_id: str, region_id: str, command_id: str) -> None:
        check_region(region_id)
        check_required(command_id, "command_id", reasons.MISSING_COMMAND_ID)
        await self._db.write(commands_repo.delete_command, account_id, region_id, command_id)

    # Invocations ------------------------------------------------------------------------

    async def invoke(
        self, account_id: str, draft: InvocationDraft, client_token: str, dry_run: bool = False
    ) -> Started:
        check_region(draft.region_id)
        check_required(draft.command_id, "command_id", reasons.MISSING_COMMAND_ID)
        key = self._idempotency_key(
            account_id, draft.region_id, "InvokeCommand", client_token, draft
        )
        if dry_run:
            key = None  # a dry run neither replays nor claims a client token
        previous = await self._db.read(replay, key)
        if previous is not None:
            return Started(invoke_id=previous["invoke_id"])
        command = await self._db.read(
            commands_repo.get_command, account_id, draft.region_id, draft.command_id
        )
        draft = await self._targets_of(account_id, draft)
        spec = validate_invocation(
            draft, command.command_id, command.spec, self._limits, self._check_frequency
        )
        return await self._start(account_id, spec, key, dry_run=dry_run)

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
        key = self._idempotency_key(
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
        previous = await self._db.read(replay, key)
        if previous is not None:
            return Started(previous["invoke_id"], previous["command_id"])
        command_id = ids.command_id()
        invocation = await self._targets_of(account_id, invocation)
        spec = validate_invocation(
            invocation, command_id, command_spec, self._limits, self._check_frequency
        )
        return await self._start(
            account_id,
            spec,
            key,
            new_command=command_spec if keep_command else None,
            dry_run=dry_run,
        )

    def schedule_for(self, frequency: str, timeout_seconds: int, created_ms: int) -> Schedule:
        """The schedule of a periodic invocation made at `created_ms`."""
        return parse_frequency(
            frequency, self._settings.default_timezone, created_ms, timeout_seconds
        )

    def _check_frequency(self, frequency: str, timeout_seconds: int) -> None:
        self.schedule_for(frequency, timeout_seconds, now_ms())

    async def _start(
        self,
        account_id: str,
        spec: InvocationSpec,
        key: IdempotencyKey | None,
        new_command: CommandSpec | None = None,
        dry_run: bool = False,
    ) -> Started:
        targets = await self._check_targets(account_id, spec)
        now = now_ms()
        schedule = None
        if spec.repeat_mode is RepeatMode.PERIOD:
            schedule = self.schedule_for(spec.frequency, spec.timeout_seconds, now)
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
            return Started(dry_run=self._dry_run(plan, targets))
        ticket = pending_audit.get()
        if ticket is not None:
            plan = replace(plan, audit=ticket.entry)
        result, effects = await self._db.write(invocations_repo.create_invocation, plan)
        if ticket is not None:
            ticket.written = True
        if plan.next_fire_ms is not None:
            self.schedules_changed()
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
        key = self._idempotency_key(
            account_id,
            region_id,
            "RerunInvocation",
            client_token,
            invoke_id,
            [s.value for s in chosen],
            sorted(set(instance_ids)),
        )
        previous = await self._db.read(replay, key)
        if previous is not None:  # a retry: what the first call made
            made = await self._db.read(
                invocations_repo.get_invocation, account_id, region_id, previous["invoke_id"]
            )
            return Rerun(made.invoke_id, made.spec.command_id, made.spec.instance_ids)
        source = await self._db.read(
            invocations_repo.get_invocation, account_id, region_id, invoke_id
        )
        targets = rerun_targets(source, chosen, instance_ids)
        started = await self._start(account_id, rerun_spec(source.spec, targets), key)
        return Rerun(started.invoke_id, started.command_id, tuple(sorted(targets)))

    def _dry_run(self, plan: InvocationPlan, targets: Mapping[str, Instance]) -> DryRun:
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

    async def _check_targets(self, account_id: str, spec: InvocationSpec) -> Mapping[str, Instance]:
        """Every instance exists in the region and runs this command type."""
        found = await self._db.read(
            agents_repo.find_instances, account_id, spec.region_id, spec.instance_ids
        )
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

    async def describe_invocations(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        command_id: str,
        instance_id: str,
        status: InvokeStatus | None,
        page_size: int,
        page_token: str,
        command_name: str = "",
    ) -> Listing[Invocation]:
        check_region(region_id)
        check_name_filter(command_name, "command_name", self._limits)
        filters = (region_id, invoke_id, command_id, instance_id, status, command_name)
        page = parse_page("invocations", filters, page_size, page_token)
        items, total = await self._db.read(
            invocations_repo.list_invocations,
            account_id,
            region_id,
            invoke_id,
            command_id,
            instance_id,
            status,
            page,
            command_name,
        )
        return listing(page, items, total, lambda i: i.invoke_id)

    async def describe_results(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        instance_id: str,
        command_id: str,
        status: InvokeStatus | None,
        include_history: bool,
        page_size: int,
        page_token: str,
    ) -> Listing[tuple[Record, bytes]]:
        check_region(region_id)
        filters = (region_id, invoke_id, instance_id, command_id, status, include_history)
        page = parse_page("results", filters, page_size, page_token)
        items, total = await self._db.read(
            invocations_repo.list_results,
            account_id,
            region_id,
            invoke_id,
            instance_id,
            command_id,
            status,
            include_history,
            page,
        )
        return listing(page, items, total, lambda r: r[0].record_id)

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
        key = self._idempotency_key(
            account_id, targets.region_id, "SendFile", client_token, draft, targets, timeout_seconds
        )
        previous = await self._db.read(replay, key)
        if previous is not None:
            return previous["invoke_id"]
        file, content = check_file(draft)
        targets = await self._targets_of(account_id, targets)
        spec = validate_file_invocation(
            targets.region_id, targets.instance_ids, file, content, timeout_seconds, self._limits
        )
        started = await self._start(account_id, spec, key)
        return started.invoke_id

    async def describe_file_results(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        instance_id: str,
        page_size: int,
        page_token: str,
    ) -> Listing[tuple[Record, FileSpec]]:
        check_region(region_id)
        page = parse_page(
            "file-results", (region_id, invoke_id, instance_id), page_size, page_token
        )
        items, total = await self._db.read(
            invocations_repo.list_file_results,
            account_id,
            region_id,
            invoke_id,
            instance_id,
            page,
        )
        return listing(page, items, total, lambda r: r[0].record_id)

    async def get_output(
        self,
        account_id: str,
        region_id: str,
        invoke_id: str,
        instance_id: str,
        record_id: str,
        offset: int,
        limit: int,
    ) -> OutputSlice:
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        if offset < 0:
            raise InvalidArgument(
                reasons.INVALID_OUTPUT_RANGE, "offset: must not be negative", field="offset"
            )
        if limit < 0 or limit > MAX_OUTPUT_READ:
            raise InvalidArgument(
                reasons.INVALID_OUTPUT_RANGE,
                f"limit: must be between 0 and {MAX_OUTPUT_READ} (0 means {DEFAULT_OUTPUT_READ})",
                field="limit",
            )
        return await self._db.read(
            invocations_repo.read_output,
            account_id,
            region_id,
            invoke_id,
            instance_id,
            record_id,
            offset,
            limit or DEFAULT_OUTPUT_READ,
        )

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
        spec = apply_invocation_change(invocation.spec, change, self._limits, self._check_frequency)
        await self._check_targets(account_id, spec)
        now = now_ms()
        schedule = None
        if change.frequency is not None:
            # Anchored as the scheduler anchors it: at the invocation's creation.
            new = self.schedule_for(spec.frequency, spec.timeout_seconds, invocation.created_ms)
            schedule = (new.next_after(now), new.one_shot)
        effects = await self._db.write(
            invocations_repo.modify_periodic,
            account_id,
            region_id,
            invoke_id,
            spec,
            change.added_instance_ids,
            schedule,
            now,
        )
        if schedule is not None:
            self.schedules_changed()
        self._hub.carry_out(effects)

    async def stop(
        self, account_id: str, region_id: str, invoke_id: str, instance_ids: Sequence[str]
    ) -> None:
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        for instance_id in instance_ids:
            check_instance_id(instance_id, self._limits)
        now = now_ms()
        effects = await self._db.write(
            invocations_repo.stop_invocation,
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

    async def watch(
        self, account_id: str, region_id: str, invoke_id: str, instance_id: str
    ) -> AsyncIterator[list[WatchEvent]]:
        """Stored output and states first, then live changes; ends when the invocation is over
        (not Running, every record terminal and its agent's last output stored).

        Yields the events of each look at the invocation together (split where their output
        passes WATCH_CHUNK bytes), so that a client can take them in one message."""
        check_region(region_id)
        check_required(invoke_id, "invoke_id", reasons.MISSING_INVOKE_ID)
        sent: dict[str, int] = {}
        last_state: dict[str, tuple[object, ...]] = {}
        grace_ms = int(self._settings.output_grace_seconds * 1000)
        loop = asyncio.get_running_loop()
        last_read = -WATCH_READ_INTERVAL
        checked = False  # the first look checks the invocation's scope; later ones need not
        with self._hub.events.subscribe(invoke_id) as changed:
            while True:
                # Under load, changes come faster than a watcher needs to look: gather those of
                # a short interval into one read.
                wait = last_read + WATCH_READ_INTERVAL - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                changed.clear()
                # The first look (what is stored already) does not hold back the next: the
                # first change after it is read at once, and later ones gathered.
                last_read = loop.time() if checked else -WATCH_READ_INTERVAL
                snapshot = await self._db.read(
                    invocations_repo.watch_snapshot,
                    account_id,
                    region_id,
                    invoke_id,
                    instance_id,
                    dict(sent),
                    WATCH_CHUNK,
                    checked,
                )
                checked = True
                events: list[WatchEvent] = []
                size = 0
                for progress in snapshot.records:
                    record = progress.record
                    offset = sent.get(record.record_id, 0)
                    data = progress.new_output or await self._output_after(record, offset)
                    while data:
                        # A batch holds at most WATCH_CHUNK bytes of output (or one chunk).
                        if events and size + len(data) > WATCH_CHUNK:
                            yield events
                            events, size = [], 0
                        event = OutputEvent(record.instance_id, record.record_id, offset, data)
                        events.append(event)
                        offset += len(data)
                        size += len(data)
                        data = await self._output_after(record, offset)
                    sent[record.record_id] = offset
                    key = (record.state, record.exit_code, record.error_code, record.dropped)
                    if last_state.get(record.record_id) != key:
                        last_state[record.record_id] = key
                        events.append(StateEvent(record, snapshot.status))
                if events:
                    yield events
                if snapshot.status is InvokeStatus.RUNNING:
                    await changed.wait()
                    continue
                now = now_ms()
                waits = [_output_wait_ms(p, now, grace_ms) for p in snapshot.records]
                if all(w == 0 for w in waits):
                    return
                pending = [w for w in waits if w is not None and w > 0]
                timeout = None if None in waits else min(pending) / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), timeout)

    async def _output_after(self, record: Record, offset: int) -> bytes:
        """The record's stored output from `offset` (at most WATCH_CHUNK bytes; empty: none)."""
        if offset >= record.output_size:
            return b""
        end = min(record.output_size, offset + WATCH_CHUNK)
        return await self._db.read(read_range, record.record_id, offset, end)

    # Instances --------------------------------------------------------------------------

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
            agents_repo.list_instances, account_id, region_id, list(instance_ids), page, selector
        )
        return listing(page, items, total, agents_repo.instance_page_key)

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

    async def _targets_of(self, account_id: str, draft: InvocationDraft) -> InvocationDraft:
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
        found = await self._db.read(
            tags_repo.select_instances, account_id, draft.region_id, selector
        )
        if not found:
            raise NotFound(
                reasons.NO_INSTANCE_MATCHED,
                f"resource_tags: no instance in region {draft.region_id} has "
                + ", ".join(f"{k}={v}" if v else k for k, v in selector),
                field="resource_tags",
            )
        # The count is checked against the per-invocation limit like named instances.
        return replace(draft, instance_ids=tuple(found))

    async def deregister_instance(self, account_id: str, region_id: str, instance_id: str) -> None:
        check_region(region_id)
        check_instance_id(instance_id, self._limits, field="instance_id")
        effects = await self._db.write(
            agents_repo.deregister_instance, account_id, region_id, instance_id, now_ms()
        )
        self._hub.disconnect(instance_id)
        self._hub.carry_out(effects)

    def _idempotency_key(
        self,
        account_id: str,
        region_id: str,
        operation: str,
        client_token: str,
        *request: object,
    ) -> IdempotencyKey | None:
        check_client_token(client_token)
        if not client_token:
            return None
        return IdempotencyKey(
            account_id, region_id, operation, client_token, _request_hash(*request)
        )


def _output_wait_ms(progress: RecordProgress, now: int, grace_ms: int) -> int | None:
    """0 when the record is over; None while it is active; else ms left to wait for output."""
    record = progress.record
    if not record.state.terminal:
        return None
    if progress.agent_done:
        return 0
    ended = record.finish_ms or record.stop_ms or now
    return max(0, ended + grace_ms - now)
