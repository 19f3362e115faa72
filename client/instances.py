"""Instances: `instances` (the list, online or not), `regions`, `tag`, `untag` and
`deregister`."""

from __future__ import annotations

from cloudassist.client import flags, render
from cloudassist.client.context import Client
from cloudassist.v1 import instance_pb2


async def instances(c: Client) -> int:
    a = c.args
    response = await c.instances.DescribeInstances(
        instance_pb2.DescribeInstancesRequest(
            region_id=c.region,
            instance_ids=a.instance,
            page_size=a.page_size,
            page_token=a.page_token,
            tags=flags.tags(a.tag),
        )
    )
    p = c.palette
    return c.listing(
        response,
        response.instances,
        [
            ("INSTANCE_ID", lambda i: i.instance_id),
            ("ONLINE", lambda i: p.paint("yes", "green") if i.online else p.paint("no", "red")),
            ("OS", lambda i: render.enum_suffix(instance_pb2.OsType.Name(i.os_type))),
            ("HOSTNAME", lambda i: i.hostname),
            ("AGENT", lambda i: i.agent_version),
            ("ACTIVE", lambda i: i.active_task_count),
            ("INVOCATIONS", lambda i: i.invocation_count),
            ("HEARTBEAT", lambda i: render.when(i.last_heartbeat_time)),
            ("TAGS", lambda i: ",".join(f"{t.key}={t.value}" for t in i.tags)),
        ],
    )


async def regions(c: Client) -> int:
    response = await c.instances.DescribeRegions(instance_pb2.DescribeRegionsRequest())
    return c.listing(
        response,
        response.regions,
        [
            ("REGION", lambda r: r.region_id),
            ("INSTANCES", lambda r: r.instance_count),
            ("ONLINE", lambda r: r.online_count),
            ("COMMANDS", lambda r: r.command_count),
        ],
    )


async def tag(c: Client) -> int:
    response = await c.instances.TagInstances(
        instance_pb2.TagInstancesRequest(
            region_id=c.region, instance_ids=c.args.instance, tags=flags.tags(c.args.tag)
        )
    )
    return c.done(response)


async def untag(c: Client) -> int:
    response = await c.instances.UntagInstances(
        instance_pb2.UntagInstancesRequest(
            region_id=c.region, instance_ids=c.args.instance, keys=c.args.key
        )
    )
    return c.done(response)


async def deregister(c: Client) -> int:
    response = await c.instances.DeregisterInstance(
        instance_pb2.DeregisterInstanceRequest(region_id=c.region, instance_id=c.args.instance_id)
    )
    return c.done(response)


def add_instances(sub: flags.Subparsers) -> None:
    ins = sub.add_parser("instances", help="list instances and whether their agent is online")
    ins.add_argument("-i", "--instance", action="append", default=[])
    ins.add_argument("-t", "--tag", action="append", help="KEY=VALUE (empty value: any)")
    flags.paged(ins)
    ins.set_defaults(handler=instances)


def add_regions(sub: flags.Subparsers) -> None:
    rg = sub.add_parser(
        "regions", help="the regions holding your instances, commands or invocations"
    )
    rg.set_defaults(handler=regions)


def add_tag(sub: flags.Subparsers) -> None:
    tg = sub.add_parser("tag", help="set tags on instances")
    tg.add_argument("-i", "--instance", action="append", required=True, help="repeatable")
    tg.add_argument("-t", "--tag", action="append", required=True, help="KEY=VALUE, repeatable")
    tg.set_defaults(handler=tag)


def add_untag(sub: flags.Subparsers) -> None:
    ut = sub.add_parser("untag", help="remove tags from instances")
    ut.add_argument("-i", "--instance", action="append", required=True, help="repeatable")
    ut.add_argument("-k", "--key", action="append", required=True, help="repeatable")
    ut.set_defaults(handler=untag)


def add_deregister(sub: flags.Subparsers) -> None:
    dr = sub.add_parser("deregister", help="revoke an instance: its agent can no longer connect")
    dr.add_argument("instance_id")
    dr.set_defaults(handler=deregister)
