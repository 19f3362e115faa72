"""`cloudassist-server`: runs the server until SIGINT or SIGTERM, then drains."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from server.app import ConfigError, ServerApp
from server.config import parse_config


async def serve(argv: list[str] | None = None) -> None:
    config = parse_config(argv)
    logging.basicConfig(
        level=config.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        app = ServerApp(config)
        await app.start()
    except ConfigError as error:
        sys.exit(f"cloudassist-server: {error}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("server").info("shutting down")
    await app.stop()


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


if __name__ == "__main__":
    main()
