"""The result plane: DescribeInvocations, DescribeInvocationResults and
DescribeSendFileResults, without gRPC: pages of what the store holds of invocations."""

from __future__ import annotations

from cloudassist.server.domain.fields import check_name_filter, check_region
from cloudassist.server.domain.files import FileSpec
from cloudassist.server.domain.limits import Limits
from cloudassist.server.domain.model import Invocation, Record
from cloudassist.server.domain.pagination import parse_page
from cloudassist.server.domain.status import InvokeStatus
from cloudassist.server.planes.listing import Listing, listing
from cloudassist.server.store import results as results_repo
from cloudassist.server.store.database import Database


class ResultPlane:
    def __init__(self, db: Database, limits: Limits) -> None:
        self._db = db
        self._limits = limits

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
            results_repo.list_invocations,
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
            results_repo.list_results,
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
            results_repo.list_file_results,
            account_id,
            region_id,
            invoke_id,
            instance_id,
            page,
        )
        return listing(page, items, total, lambda r: r[0].record_id)
