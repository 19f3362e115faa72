"""The server's channel arguments come from its keepalive and connection-age flags."""

from __future__ import annotations

from cloudassist.server.config import parse_config
from cloudassist.server.listeners import grpc_options


def options(*flags: str) -> dict[str, int]:
    return dict(grpc_options(parse_config(list(flags))))


def test_keepalive_flags_set_the_ping_interval_and_timeout() -> None:
    got = options("--keepalive", "45", "--keepalive-timeout", "7")
    assert got["grpc.keepalive_time_ms"] == 45_000
    assert got["grpc.keepalive_timeout_ms"] == 7_000
    assert got["grpc.keepalive_permit_without_calls"] == 1


def test_no_connection_age_by_default() -> None:
    got = options()
    assert "grpc.max_connection_age_ms" not in got
    assert "grpc.max_connection_age_grace_ms" not in got


def test_connection_age_grace_defaults_to_the_shutdown_grace() -> None:
    got = options("--max-connection-age", "600", "--shutdown-grace", "12")
    assert got["grpc.max_connection_age_ms"] == 600_000
    assert got["grpc.max_connection_age_grace_ms"] == 12_000


def test_connection_age_grace_has_its_own_flag() -> None:
    got = options("--max-connection-age", "600", "--max-connection-age-grace", "3")
    assert got["grpc.max_connection_age_grace_ms"] == 3_000


def test_the_transport_holds_a_reconnecting_fleet_instead_of_refusing_it() -> None:
    """gRPC refuses calls past 1,000 to 3,000 waiting for the event loop, and cancels those
    that waited 30 s (an agent still writing its hello reads either as INTERNAL); the agent
    service admits them instead."""
    got = options()
    assert got["grpc.server.max_pending_requests"] >= 50_000
    assert got["grpc.server_max_unrequested_time_in_server"] >= 300
    assert (
        got["grpc.server.max_pending_requests_hard_limit"]
        >= got["grpc.server.max_pending_requests"]
    )
