"""Defence in depth against a script running on the wrong machine: every dispatch names its
instance, an agent refuses a task addressed to another instance (the script never runs), and
the server refuses a report on a record of another instance than the session's."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from cloudassist.v1 import agent_pb2, command_pb2_grpc
from cloudassist.v1 import command_pb2 as pb
from tests.integration.conftest import Cluster
from tests.integration.helpers import REGION, results, run
from tests.integration.test_agent_protocol import STEP_SECONDS, CountingProxy, old_agent
from tests.support import AgentProcess, wait_until


async def test_every_dispatch_names_the_instance_it_is_for(
    cluster: Cluster, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    async with old_agent(cluster, "i-named") as agent:
        await run(stub, "echo named", ["i-named"])
        dispatched = await agent.next()
        assert dispatched.HasField("dispatch"), dispatched
        assert dispatched.dispatch.instance_id == "i-named"


async def test_the_server_refuses_a_report_on_another_instances_task(
    cluster: Cluster, stub: command_pb2_grpc.CommandServiceStub
) -> None:
    async with old_agent(cluster, "i-owner") as owner, old_agent(cluster, "i-intruder") as intruder:
        invoke_id = await run(stub, "echo mine", ["i-owner"])
        task_id = (await owner.next()).dispatch.task_id
        # Another agent claims the task's result: refused, and told to forget it (an ack that
        # the result is done with), so it does not send it again after every reconnect.
        await intruder.send(
            task_finished=agent_pb2.TaskFinished(task_id=task_id, exit_code=0, output_size=0)
        )
        ack = await intruder.ack_of(task_id)
        assert ack.result_stored
        result = (await results(stub, invoke_id))["i-owner"]
        assert result.state == pb.EXECUTION_STATE_PENDING, "the intruder's report changed nothing"
        wait_until(
            lambda: (
                "reported on task" in cluster.server.log()
                and "a task of instance 'i-owner'" in cluster.server.log()
            ),
            STEP_SECONDS,
            "the server to log the refused report",
        )
        # The task's own agent still runs it.
        accepted = agent_pb2.TaskAccepted(task_id=task_id)
        accepted.start_time.GetCurrentTime()
        await owner.send(task_accepted=accepted)
        await owner.send(output=agent_pb2.TaskOutput(task_id=task_id, offset=0, data=b"mine\n"))
        await owner.send(
            task_finished=agent_pb2.TaskFinished(task_id=task_id, exit_code=0, output_size=5)
        )
        while not (await owner.ack_of(task_id)).result_stored:
            pass
        result = (await results(stub, invoke_id))["i-owner"]
        assert result.state == pb.EXECUTION_STATE_SUCCESS


def _readdress(raw: bytes) -> bytes:
    """Addresses every dispatch to another instance, as a server with a bug might."""
    message = agent_pb2.ConnectResponse.FromString(raw)
    if message.HasField("orders"):
        for dispatch in message.orders.dispatches:
            dispatch.instance_id = "i-elsewhere"
    elif message.HasField("dispatch"):
        message.dispatch.instance_id = "i-elsewhere"
    else:
        return raw
    return message.SerializeToString()


async def test_an_agent_refuses_a_task_addressed_to_another_instance(
    cluster: Cluster, stub: command_pb2_grpc.CommandServiceStub, tmp_path: Path
) -> None:
    proxy = CountingProxy(cluster.server.agent_address, rewrite=_readdress)
    serving = proxy.serve()
    await anext(serving)
    agent = AgentProcess(cluster.server, "i-guarded", tmp_path)
    agent.via = f"127.0.0.1:{proxy.port}"
    marker = tmp_path / "ran"
    try:
        await asyncio.to_thread(agent.start)
        invoke_id = await run(stub, f"touch {marker}", ["i-guarded"])
        async for _ in stub.WatchInvocation(
            pb.WatchInvocationRequest(region_id=REGION, invoke_id=invoke_id),
            timeout=STEP_SECONDS,
        ):
            pass
        result = (await results(stub, invoke_id))["i-guarded"]
        assert result.state == pb.EXECUTION_STATE_ERROR, result
        assert result.error_code == "InstanceMismatch"
        assert "i-elsewhere" in result.error_info
        assert not marker.exists(), "the script ran"
        assert "refused a task addressed to instance i-elsewhere" in agent.log()
    finally:
        await asyncio.to_thread(agent.stop)
        with contextlib.suppress(StopAsyncIteration):
            await anext(serving)
