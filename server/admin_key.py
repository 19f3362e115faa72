"""Admin keys that survive any one server: `--admin-key-file` (read here) and
`cloudassist-server admin-key`, which issues a new admin key straight into the database, the
operator's way back in when every admin key is lost. It needs no key, only the database
(the same --db or --data-dir as the server), and works while servers run on it."""

from __future__ import annotations

import argparse
import getpass
import os
import socket
import sys
from pathlib import Path
from typing import IO

from cloudassist.common import logs
from cloudassist.common.clock import now_ms
from cloudassist.server.config import ServerConfig, add_database_flags, database_config
from cloudassist.server.domain.credentials import parse_provided_key
from cloudassist.server.store import schema
from cloudassist.server.store.admin_keys import issue_admin_key
from cloudassist.server.store.engine import (
    DATABASE_ERRORS,
    DatabasePathError,
    database_error,
    make_engine,
    missing_sqlite_file,
)

PROG = "cloudassist-server admin-key"


def read_key_file(path: Path) -> tuple[str, str]:
    """(key id, secret) of the key in `path`; ValueError with a one-line reason (that never
    quotes the file, which holds a secret)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "not UTF-8 text"
        raise ValueError(f"--admin-key-file {path}: cannot read it: {reason}") from error
    try:
        return parse_provided_key(text)
    except ValueError as error:
        raise ValueError(f"--admin-key-file {path}: {error}") from error


def local_peer() -> str:
    """Who did it, for the audit trail: this machine's user and host name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a name (containers)
        user = str(os.getuid())
    return f"local:{user}@{socket.gethostname()}"[:128]


def parse_args(argv: list[str]) -> tuple[ServerConfig, Path | None, str]:
    """The database (as the server names it), --output and --description."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Issues a new API key of the admin account straight into the database "
        "and prints it once (or writes it to --output). It needs no other key: it is the way "
        "back in when every admin key is lost, and works while servers run on the database. "
        "The flags and environment variables name the database as they do for the server.",
    )
    parser.add_argument(
        "--output",
        type=Path,
        metavar="FILE",
        help="write the key to FILE (mode 0600) instead of printing it",
    )
    parser.add_argument(
        "--description",
        default="issued by cloudassist-server admin-key",
        help="the key's description [%(default)s]",
    )
    add_database_flags(parser)
    args = parser.parse_args(argv)
    output = args.output.absolute() if args.output is not None else None
    return database_config(args), output, args.description


def _temporary(path: Path) -> tuple[Path, IO[str]]:
    """A new file beside `path` (mode 0600), renamed over it once it holds the key: a file
    there before stays as it was until then."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # also when a leftover was there with another mode
    return temporary, os.fdopen(fd, "w")


def _check_schema(found: schema.SchemaState) -> None:
    if found.up_to_date:
        return
    if found.empty:
        raise schema.SchemaError(
            "the database has no schema yet: the server makes it (and an admin key) on its "
            "first start"
        )
    at = f"schema revision {found.current}" if found.current else "no schema revision"
    if found.newer:
        raise schema.SchemaError(
            f"the database is at {at}, which this release does not know: use the "
            "cloudassist-server that migrated it"
        )
    raise schema.SchemaError(
        f"the database is at {at} and this release needs {found.head}: run "
        "`cloudassist-server migrate` first"
    )


def issue(config: ServerConfig, output: Path | None, description: str) -> None:
    """Issues the key; exits with a one-line message when it cannot."""
    url = config.database_url
    temporary: tuple[Path, IO[str]] | None = None
    try:
        missing = missing_sqlite_file(url)
        if missing is not None:
            sys.exit(
                f"{PROG}: no database at {missing}: give the --db or --data-dir the server uses"
            )
        # Before the key exists: a file that cannot be written loses no key.
        temporary = _temporary(output) if output is not None else None
        engine = make_engine(url)
        try:
            _check_schema(schema.state(engine))
            with engine.begin() as conn:
                account, key, token = issue_admin_key(conn, description, now_ms(), local_peer())
        finally:
            engine.dispose()
        if temporary is not None and output is not None:
            written, out = temporary
            with out:
                out.write(token + "\n")
            written.replace(output)
            temporary = None
        else:
            print(token, flush=True)
    except OSError as error:
        sys.exit(f"{PROG}: {error.filename or output}: {error.strerror or error}")
    except (schema.SchemaError, DatabasePathError) as error:
        sys.exit(f"{PROG}: {error}")
    except DATABASE_ERRORS as error:
        sys.exit(f"{PROG}: {database_error(error)}")
    finally:
        if temporary is not None:  # the key was not issued, or not written
            temporary[1].close()
            temporary[0].unlink(missing_ok=True)
    where = f"written to {output} (mode 0600)" if output is not None else "printed above"
    print(
        f"issued admin API key {key.key_id} of account {account.name} ({account.account_id}), "
        f"{where}; it is recorded in the audit trail",
        file=sys.stderr,
    )


def main(argv: list[str]) -> None:
    config, output, description = parse_args(argv)
    logs.configure(config.log_level, config.log_format)
    issue(config, output, description)
