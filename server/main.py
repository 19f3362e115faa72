"""`cloudassist-server`: runs the server until SIGINT or SIGTERM, then drains.

`cloudassist-server migrate [flags]` upgrades the database schema instead (the same --db or
--data-dir as the server); `--show` prints its revision and changes nothing.
`cloudassist-server admin-key [flags]` issues a new admin API key (server/admin_key.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from sqlalchemy.exc import SQLAlchemyError

from cloudassist.common import event_loop, logs
from cloudassist.server import admin_key
from cloudassist.server.app import ServerApp
from cloudassist.server.config import ServerConfig, parse_config, parse_migrate_config
from cloudassist.server.listeners import ConfigError
from cloudassist.server.store import schema
from cloudassist.server.store.engine import (
    DATABASE_ERRORS,
    DatabasePathError,
    database_error,
    make_engine,
    missing_sqlite_file,
)


async def serve(config: ServerConfig) -> None:
    try:
        app = ServerApp(config)
        await app.start()
    except (ConfigError, schema.SchemaError, DatabasePathError) as error:
        sys.exit(f"cloudassist-server: {error}")
    except SQLAlchemyError as error:
        sys.exit(f"cloudassist-server: {database_error(error)}")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    logging.getLogger("cloudassist.server").info("shutting down")
    await app.stop()


def _show(found: schema.SchemaState) -> str:
    if found.current is not None:
        current = found.current + (" (newer than this server)" if found.newer else "")
    elif found.empty:
        current = "none (an empty database: migrate or the server creates the schema)"
    else:
        current = (
            f"none (cloudassist 0.1.0's tables: migrate records them as {schema.FIRST_REVISION})"
        )
    return f"database revision: {current}\nthis server needs: {found.head}"


def _report(done: schema.Upgrade) -> str:
    if done.created:
        return f"created the database schema at revision {done.after}"
    if done.stamped:
        return (
            f"recorded the database without a revision (cloudassist 0.1.0) as revision "
            f"{schema.FIRST_REVISION}, then upgraded it to revision {done.after}"
        )
    if done.before == done.after:
        return f"the database is already at revision {done.after}"
    return f"upgraded the database from revision {done.before} to {done.after}"


def migrate(config: ServerConfig, *, show: bool) -> None:
    """Upgrades the database to this server's revision, or with `show` prints where it is and
    exits 0 only when it is current. A SQLite file that does not exist is refused rather than
    created: it means a --db or --data-dir other than the server's."""
    url = config.database_url
    try:
        missing = missing_sqlite_file(url)
        if missing is not None and show:
            print(f"database revision: none (no database at {missing})")
            sys.exit(1)
        if missing is not None:
            sys.exit(
                f"cloudassist-server migrate: no database at {missing}: give the --db or "
                "--data-dir the server uses (a new database is created by the server itself "
                "on its first start)"
            )
        engine = make_engine(url)
        try:
            if show:
                found = schema.state(engine)
                print(_show(found))
                sys.exit(0 if found.up_to_date else 1)
            done = schema.upgrade(engine)
        finally:
            engine.dispose()
    except (schema.SchemaError, DatabasePathError) as error:
        sys.exit(f"cloudassist-server migrate: {error}")
    except DATABASE_ERRORS as error:
        sys.exit(f"cloudassist-server migrate: {database_error(error)}")
    print(_report(done))


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["migrate"]:
        config, show = parse_migrate_config(args[1:])
        logs.configure(config.log_level, config.log_format)
        migrate(config, show=show)
        return
    if args[:1] == ["admin-key"]:
        admin_key.main(args[1:])
        return
    config = parse_config(args)
    logs.configure(config.log_level, config.log_format)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            event_loop.run(serve(config))
    except event_loop.EventLoopError as error:
        sys.exit(f"cloudassist-server: {error}")


if __name__ == "__main__":
    main()
