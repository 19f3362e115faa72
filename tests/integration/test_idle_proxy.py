"""Agent streams through a proxy that cuts connections idle for a few seconds, as load
balancers and meshes do: the application heartbeats keep a quiet stream alive; without them
(a heartbeat interval longer than the proxy's idle timeout) the proxy does cut it."""

from __future__ import annotations

from pathlib import Path

from cloudassist.v1 import command_pb2 as pb
from cloudassist.v1 import command_pb2_grpc
from tests.integration.helpers import run, watch
from tests.support import AgentProcess, ServerProcess, TcpProxy, client_channel

IDLE_SECONDS = 2.5
# Silent for well over twice the proxy's idle timeout.
QUIET_SCRIPT = "sleep 7; echo done"


async def quiet_run_through_proxy(tmp_path: Path, heartbeat_interval: int) -> tuple[str, str]:
    """Runs QUIET_SCRIPT on an agent behind the idle-cutting proxy; returns the proxy's log and
    the agent's."""
    # HTTP/2 keepalive pings would keep the TCP connection busy too: far apart here, so that
    # only the application heartbeats are under test.
    server = ServerProcess(
        tmp_path / "server", "--heartbeat-interval", str(heartbeat_interval), "--keepalive", "600"
    )
    server.start()
    proxy = TcpProxy(tmp_path, server.port, idle_seconds=IDLE_SECONDS)
    agent = AgentProcess(server, "i-quiet", tmp_path)
    agent.via = proxy.address
    try:
        proxy.start()
        agent.start()
        async with client_channel(server) as channel:
            stub = command_pb2_grpc.CommandServiceStub(channel)
            invoke_id = await run(stub, QUIET_SCRIPT, ["i-quiet"], timeout_seconds=60)
            seen = await watch(stub, invoke_id)
        assert seen.states["i-quiet"].state == pb.EXECUTION_STATE_SUCCESS
        assert bytes(seen.output["i-quiet"]) == b"done\n"
        return proxy.log(), agent.log()
    finally:
        agent.stop()
        proxy.stop()
        server.stop()


async def test_heartbeats_keep_a_quiet_stream_alive(tmp_path: Path) -> None:
    proxy_log, agent_log = await quiet_run_through_proxy(tmp_path, heartbeat_interval=1)
    assert "accepted connection" in proxy_log
    assert "cut idle connection" not in proxy_log, proxy_log
    assert "connection to" not in agent_log, "the agent never lost its stream"


async def test_without_heartbeats_the_proxy_cuts_the_stream(tmp_path: Path) -> None:
    # The control: the proxy does cut an idle stream; the agent reconnects and resumes.
    proxy_log, agent_log = await quiet_run_through_proxy(tmp_path, heartbeat_interval=30)
    assert "cut idle connection" in proxy_log
    assert "connection to" in agent_log, "the agent lost its stream and reconnected"
