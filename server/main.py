"""`cloudassist-server`: runs the server until SIGINT or SIGTERM, then drains.

`cloudassist-server migrate [flags]` upgrades the database schema instead (the same --db or
--data-dir as the server); `--show` prints its revision and changes nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from server import logs
from server.app import ConfigError, ServerApp
from server.config import ServerConfig, parse_config
from server.store import schema
from server.store.engine import make_engine


async def serve(config: ServerConfig) -> None:
    try:
        app = ServerApp(config)
        await app.start()
    except (ConfigError, schema.SchemaError) as error:
        sys.exit(f"cloudassist-server: {error}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("server").info("shutting down")
    await app.stop()


def migrate(config: ServerConfig, *, show: bool) -> None:
    engine = make_engine(config.database_url)
    try:
        if show:
            found = schema.state(engine)
            current = found.current or ("none (empty database)" if found.empty else "none")
            print(f"database revision: {current}\nthis server needs: {found.head}")
            sys.exit(0 if found.up_to_date else 1)
        before, after = schema.upgrade(engine)
    except schema.SchemaError as error:
        sys.exit(f"cloudassist-server migrate: {error}")
    finally:
        engine.dispose()
    if before == after:
        print(f"the database is already at revision {after}")
    else:
        print(f"upgraded the database from revision {before or 'none'} to {after}")


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    command = args.pop(0) if args[:1] == ["migrate"] else "serve"
    show = command == "migrate" and "--show" in args
    if show:
        args.remove("--show")
    config = parse_config(args)
    logs.configure(config.log_level, config.log_format)
    if command == "migrate":
        migrate(config, show=show)
        return
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config))


if __name__ == "__main__":
    main()
