"""--max-connection-age: the server closes connections past that age (after the grace), so
that agents reconnect and spread over servers; a script running across it is not lost."""

from __future__ import annotations

from pathlib import Path

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import run, watch
from tests.support import AgentProcess, ServerProcess, client_channel, wait_until


async def test_agents_reconnect_when_their_connection_ages_out(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "server", "--max-connection-age", "2", "--max-connection-age-grace", "1"
    )
    server.start()
    agent = AgentProcess(server, "i-aging", tmp_path)
    try:
        agent.start()
        async with client_channel(server) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            # Runs across at least one forced reconnection.
            invoke_id = await run(stub, "sleep 5; echo survived", ["i-aging"], timeout_seconds=60)

            def reconnected() -> bool:
                return server.log().count("agent connected") >= 2

            wait_until(reconnected, 30, "the agent to connect a second time")
            seen = await watch(stub, invoke_id)
        assert seen.states["i-aging"].state == pb.EXECUTION_STATE_SUCCESS
        assert bytes(seen.output["i-aging"]) == b"survived\n"
        assert "connection to" in agent.log(), "the agent saw its stream end"
    finally:
        agent.stop()
        server.stop()
