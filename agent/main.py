"""`cloudassist-agent`: connects to the server and runs what it is sent until SIGINT/SIGTERM;
`cloudassist-agent install-service …` installs it as a systemd service instead."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys

from cloudassist.agent.config import parse_config
from cloudassist.agent.connection import RegistrationError
from cloudassist.agent.install_service import install_service
from cloudassist.agent.session import Agent

# The agent and the server ship in one distribution, so they share one log format (text, or
# JSON lines with ids as fields).
from cloudassist.common import event_loop, logs


async def run_agent(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logs.configure(config.log_level, config.log_format)
    agent = Agent(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, agent.stop)
    try:
        await agent.run()
    except RegistrationError as error:
        sys.exit(f"cloudassist-agent: {error}")


def main() -> None:
    if os.name != "posix":
        sys.exit("cloudassist-agent runs on Linux and other POSIX systems only, for now")
    if sys.argv[1:2] == ["install-service"]:
        # A step before the agent runs: no event loop, and the agent's flags are parsed there.
        sys.exit(install_service(sys.argv[2:]))
    try:
        with contextlib.suppress(KeyboardInterrupt):
            event_loop.run(run_agent())
    except event_loop.EventLoopError as error:
        sys.exit(f"cloudassist-agent: {error}")


if __name__ == "__main__":
    main()
