"""InstanceService: protobuf in, plane call, protobuf out."""

from __future__ import annotations

from typing import Any

from grpc import aio

from cloudassist.server.api import convert
from cloudassist.server.api.errors import unary_errors
from cloudassist.server.auth import principal
from cloudassist.server.planes.instances import InstancePlane
from cloudassist.v1 import instance_pb2 as pb
from cloudassist.v1 import instance_pb2_grpc


class InstanceService(instance_pb2_grpc.InstanceServiceServicer):
    def __init__(self, plane: InstancePlane) -> None:
        self._plane = plane

    @unary_errors
    async def DescribeInstances(
        self, request: pb.DescribeInstancesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DescribeInstancesResponse:
        listing = await self._plane.describe_instances(
            principal().account_id,
            request.region_id,
            list(request.instance_ids),
            request.page_size,
            request.page_token,
            [(t.key, t.value) for t in request.tags],
        )
        return pb.DescribeInstancesResponse(
            instances=[convert.instance_to(i) for i in listing.items],
            total_count=listing.total_count,
            next_page_token=listing.next_page_token,
        )

    @unary_errors
    async def DeregisterInstance(
        self, request: pb.DeregisterInstanceRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DeregisterInstanceResponse:
        await self._plane.deregister_instance(
            principal().account_id, request.region_id, request.instance_id
        )
        return pb.DeregisterInstanceResponse()

    @unary_errors
    async def TagInstances(
        self, request: pb.TagInstancesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.TagInstancesResponse:
        await self._plane.tag_instances(
            principal().account_id,
            request.region_id,
            list(request.instance_ids),
            [(t.key, t.value) for t in request.tags],
        )
        return pb.TagInstancesResponse()

    @unary_errors
    async def UntagInstances(
        self, request: pb.UntagInstancesRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.UntagInstancesResponse:
        await self._plane.untag_instances(
            principal().account_id,
            request.region_id,
            list(request.instance_ids),
            list(request.keys),
        )
        return pb.UntagInstancesResponse()

    @unary_errors
    async def DescribeRegions(
        self, request: pb.DescribeRegionsRequest, context: aio.ServicerContext[Any, Any]
    ) -> pb.DescribeRegionsResponse:
        regions = await self._plane.describe_regions(principal().account_id)
        return pb.DescribeRegionsResponse(
            regions=[
                pb.Region(
                    region_id=r.region_id,
                    instance_count=r.instance_count,
                    online_count=r.online_count,
                    command_count=r.command_count,
                )
                for r in regions
            ]
        )
