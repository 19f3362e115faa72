"""The command plane: CreateCommand, ModifyCommand, DescribeCommands and DeleteCommand,
without gRPC. It validates with the domain rules and reads and writes through the store."""

from __future__ import annotations

from collections.abc import Sequence

from cloudassist.common.clock import now_ms
from cloudassist.server.domain import ids, reasons
from cloudassist.server.domain.fields import check_name_filter, check_region, check_required
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import Command, CommandDraft, CommandPatch, CommandType
from cloudassist.server.domain.pagination import parse_page
from cloudassist.server.domain.tags import check_selector
from cloudassist.server.domain.validation import apply_patch, validate_command
from cloudassist.server.planes.listing import Listing, listing
from cloudassist.server.planes.shared import idempotency_key
from cloudassist.server.store import commands as commands_repo
from cloudassist.server.store.database import Database


class CommandPlane:
    def __init__(self, db: Database, limits: Limits) -> None:
        self._db = db
        self._limits = limits

    async def create_command(self, account_id: str, draft: CommandDraft, client_token: str) -> str:
        spec = validate_command(draft, self._limits)
        key = idempotency_key(account_id, spec.region_id, "CreateCommand", client_token, draft)
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
