"""`cloudassist-server migrate` and the server on a database they cannot use, and the
migration writer for developers (`make migration`)."""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import Column, String, Table
from sqlmodel import SQLModel

from cloudassist.server.config import parse_config
from cloudassist.server.main import main, migrate, serve
from cloudassist.server.store import schema
from cloudassist.server.store.engine import make_engine
from tests.support import free_port

BAD_URLS = {
    "malformed": "not a url",
    "unknown dialect": "nonsense://host/db",
    "driver not installed": "mysql://user@127.0.0.1/cloudassist",
    "nothing listening": f"postgresql+psycopg://user@127.0.0.1:{free_port()}/cloudassist",
}


def _one_line(exit: pytest.ExceptionInfo[SystemExit]) -> str:
    message = exit.value.code
    assert isinstance(message, str), f"exit status {message!r}, not a message"
    assert "\n" not in message, message
    assert "Traceback" not in message
    return message


@pytest.mark.parametrize("url", BAD_URLS.values(), ids=BAD_URLS.keys())
@pytest.mark.parametrize("show", [False, True], ids=["migrate", "show"])
def test_migrate_with_a_bad_database_url_is_a_one_line_error(url: str, show: bool) -> None:
    with pytest.raises(SystemExit) as exit:
        migrate(parse_config(["--db", url]), show=show)
    assert _one_line(exit).startswith("cloudassist-server migrate: cannot use the database: ")


@pytest.mark.parametrize(
    "url", [BAD_URLS["malformed"], BAD_URLS["unknown dialect"], BAD_URLS["nothing listening"]]
)
async def test_the_server_with_a_bad_database_url_is_a_one_line_error(
    url: str, tmp_path: Path
) -> None:
    config = parse_config(["--db", url, "--data-dir", str(tmp_path), "--listen", "127.0.0.1:0"])
    with pytest.raises(SystemExit) as exit:
        await serve(config)
    assert _one_line(exit).startswith("cloudassist-server: cannot use the database: ")


def test_migrate_on_an_empty_database_creates_the_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = parse_config(["--data-dir", str(tmp_path)])
    engine = make_engine(config.database_url)
    engine.connect().close()  # the file exists, without a table
    engine.dispose()
    migrate(config, show=False)
    assert capsys.readouterr().out == (
        f"created the database schema at revision {schema.head_revision()}\n"
    )
    with pytest.raises(SystemExit) as exit:
        migrate(config, show=True)
    assert exit.value.code == 0
    assert f"database revision: {schema.head_revision()}\n" in capsys.readouterr().out


def test_new_revision_writes_the_next_migration_from_the_tables(tmp_path: Path) -> None:
    head = schema.head_revision()
    following = f"{int(head) + 1:04d}"
    # A table the models have and the migrations do not.
    probe = Table(
        "probe_widgets", SQLModel.metadata, Column("widget_id", String(64), primary_key=True)
    )
    try:
        path = schema.new_revision("add probe widgets", tmp_path)
    finally:
        SQLModel.metadata.remove(probe)
    assert path == tmp_path / f"{following}_add_probe_widgets.py"
    source = path.read_text()
    compile(source, str(path), "exec")
    assert f"revision = '{following}'" in source
    assert f"down_revision = '{head}'" in source
    assert "op.create_table('probe_widgets'" in source
    assert "op.drop_table('probe_widgets')" in source
    assert schema.head_revision() == head, "the project's migrations are untouched"


def test_new_revision_without_a_change_writes_an_empty_migration(tmp_path: Path) -> None:
    path = schema.new_revision("nothing", tmp_path)
    source = path.read_text()
    assert "op." not in source, "the migrations make exactly the models' tables"


@pytest.fixture
def root_logger() -> Iterator[None]:
    """main() configures logging: the root logger is given back as it was."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.usefixtures("root_logger")
def test_show_on_a_missing_sqlite_database_creates_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--show", "--data-dir", str(data_dir)])
    assert exited.value.code == 1
    assert "no database at" in capsys.readouterr().out
    assert not data_dir.exists()


@pytest.mark.usefixtures("root_logger")
def test_migrate_on_a_missing_sqlite_database_is_refused_and_creates_nothing(
    tmp_path: Path,
) -> None:
    # Say from the wrong directory: the server's database is elsewhere, and an empty new one
    # here, reported as migrated, would leave it untouched.
    data_dir = tmp_path / "nowhere"
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--data-dir", str(data_dir)])
    assert _one_line(exited) == (
        f"cloudassist-server migrate: no database at {data_dir / 'cloudassist.db'}: give the "
        "--db or --data-dir the server uses (a new database is created by the server itself "
        "on its first start)"
    )
    assert not data_dir.exists()


def _under_proc(_: Path) -> Path:
    return Path("/proc/nonexistent/x")


def _inside_a_file(tmp_path: Path) -> Path:
    (tmp_path / "a-file").write_text("")
    return tmp_path / "a-file" / "data"


def _name_too_long(tmp_path: Path) -> Path:
    """A name the OS refuses whoever asks (tests may run as root, whom permissions do not
    stop): even whether a file exists in it is an OSError, ENAMETOOLONG."""
    return tmp_path / ("x" * 300)


# Data directories that cannot be made, and the OS's reason.
UNUSABLE_DATA_DIRS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "under /proc": (_under_proc, "No such file or directory"),
    "inside a file": (_inside_a_file, "Not a directory"),
    "name too long": (_name_too_long, "File name too long"),
}


@pytest.mark.parametrize(
    ("unusable", "reason"), UNUSABLE_DATA_DIRS.values(), ids=UNUSABLE_DATA_DIRS.keys()
)
async def test_the_server_on_an_unusable_data_dir_is_a_one_line_error(
    tmp_path: Path, unusable: Callable[[Path], Path], reason: str
) -> None:
    database = unusable(tmp_path) / "cloudassist.db"
    config = parse_config(["--data-dir", str(database.parent), "--listen", "127.0.0.1:0"])
    with pytest.raises(SystemExit) as exited:
        await serve(config)
    message = _one_line(exited)
    assert message.startswith(f"cloudassist-server: cannot use the database at {database}: ")
    assert reason in message


@pytest.mark.usefixtures("root_logger")
@pytest.mark.parametrize("flags", [[], ["--show"]], ids=["migrate", "show"])
@pytest.mark.parametrize("unusable", [_under_proc, _inside_a_file], ids=["under /proc", "file"])
def test_migrate_on_a_data_dir_that_cannot_exist_finds_no_database(
    tmp_path: Path,
    unusable: Callable[[Path], Path],
    flags: list[str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    database = unusable(tmp_path) / "cloudassist.db"
    with pytest.raises(SystemExit) as exited:
        main(["migrate", *flags, "--data-dir", str(database.parent)])
    if flags:
        assert exited.value.code == 1
        assert capsys.readouterr().out == f"database revision: none (no database at {database})\n"
    else:
        assert _one_line(exited).startswith(
            f"cloudassist-server migrate: no database at {database}: give the --db or --data-dir"
        )


@pytest.mark.usefixtures("root_logger")
@pytest.mark.parametrize("flags", [[], ["--show"]], ids=["migrate", "show"])
def test_migrate_on_a_path_the_os_refuses_is_a_one_line_error(
    tmp_path: Path, flags: list[str]
) -> None:
    database = _name_too_long(tmp_path) / "cloudassist.db"
    with pytest.raises(SystemExit) as exited:
        main(["migrate", *flags, "--data-dir", str(database.parent)])
    assert _one_line(exited) == (
        f"cloudassist-server migrate: cannot use the database at {database}: "
        f"[Errno {errno.ENAMETOOLONG}] {os.strerror(errno.ENAMETOOLONG)}: '{database}'"
    )


def test_migrate_has_its_own_help(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["migrate", "--help"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cloudassist-server migrate")
    assert "--show" in out
    assert "--listen" not in out
