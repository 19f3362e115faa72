"""SendFile on the agent: a file written whole or not at all (a temporary file, then a rename)."""

from __future__ import annotations

import contextlib
import grp
import os
import pwd
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cloudassist.agent.executor import LaunchError
from cloudassist.common.task_errors import (
    ACCOUNT_NOT_EXISTS,
    DIRECTORY_NOT_EXISTS,
    FILE_ALREADY_EXISTS,
)


@dataclass(frozen=True)
class FileToWrite:
    name: str
    target_dir: str
    mode: int
    owner: str
    group: str
    overwrite: bool


def _ids(file: FileToWrite) -> tuple[int, int]:
    """The uid and gid to give the file (-1: leave as the agent's)."""
    try:
        uid = pwd.getpwnam(file.owner).pw_uid if file.owner else -1
    except KeyError as exc:
        raise LaunchError(ACCOUNT_NOT_EXISTS, f"no user {file.owner!r} on this instance") from exc
    try:
        gid = grp.getgrnam(file.group).gr_gid if file.group else -1
    except KeyError as exc:
        raise LaunchError(ACCOUNT_NOT_EXISTS, f"no group {file.group!r} on this instance") from exc
    return uid, gid


def _start_of(name: str, max_bytes: int = 64) -> str:
    """The start of `name` that takes at most `max_bytes` bytes in UTF-8."""
    return name.encode()[:max_bytes].decode(errors="ignore")


def write_file(file: FileToWrite, content: bytes) -> None:
    """Writes the file (blocking: call it from the I/O thread). A file already there stays
    as it was unless `overwrite`; readers never see a part of the new one."""
    uid, gid = _ids(file)
    target = Path(file.target_dir)
    path = target / file.name
    try:
        target.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise LaunchError(DIRECTORY_NOT_EXISTS, f"{target} is not a directory") from exc
    if path.is_dir():
        raise LaunchError(FILE_ALREADY_EXISTS, f"{path} is a directory")
    if path.exists() and not file.overwrite:
        raise LaunchError(FILE_ALREADY_EXISTS, f"{path} exists and overwrite is off")
    # The temporary name must fit where the file's own name just fits (255 bytes).
    fd, tmp = tempfile.mkstemp(dir=target, prefix=f".{_start_of(file.name)}.")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(content)
            out.flush()
            os.fchmod(out.fileno(), file.mode)
            if uid != -1 or gid != -1:
                os.fchown(out.fileno(), uid, gid)
            os.fsync(out.fileno())
        if file.overwrite:
            os.replace(tmp, path)
        else:
            # A link fails if the name was taken meanwhile: never replaces a file.
            try:
                os.link(tmp, path)
            except FileExistsError as exc:
                raise LaunchError(
                    FILE_ALREADY_EXISTS, f"{path} exists and overwrite is off"
                ) from exc
    finally:
        # Gone after a rename; after a link the file lives on under its own name.
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
