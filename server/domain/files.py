"""SendFile: the file an invocation pushes, and its rules."""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import dataclass

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.paths import is_absolute_linux_dir

MAX_CONTENT_BYTES = 32 * 1024
NAME_BYTES = 255
DIR_CHARS = 4096
DEFAULT_MODE = 0o644
_MODE = re.compile(r"0?[0-7]{3,4}")
_ACCOUNT = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


@dataclass(frozen=True)
class FileSpec:
    name: str
    target_dir: str
    mode: int = DEFAULT_MODE
    owner: str = ""
    group: str = ""
    overwrite: bool = False


@dataclass(frozen=True)
class FileDraft:
    name: str
    target_dir: str
    content: bytes
    base64: bool = False
    mode: str = ""
    owner: str = ""
    group: str = ""
    overwrite: bool = False


def _invalid(reason: str, field: str, text: str) -> InvalidArgument:
    return InvalidArgument(reason, f"{field}: {text}", field=field)


def check_file(draft: FileDraft) -> tuple[FileSpec, bytes]:
    """The file to push and its content, or InvalidArgument naming the first broken rule."""
    name = draft.name
    # File systems count a name's bytes (UTF-8), not its characters.
    size = len(name.encode())
    if not name or size > NAME_BYTES or "/" in name or name in (".", ".."):
        raise _invalid(
            reasons.FILE_NAME_INVALID,
            "name",
            f"1 to {NAME_BYTES} bytes in UTF-8 (this one has {size}), no '/', not . or ..",
        )
    target = draft.target_dir
    if not is_absolute_linux_dir(target) or len(target) > DIR_CHARS:
        raise _invalid(
            reasons.FILE_DIR_INVALID,
            "target_dir",
            f"an absolute directory of at most {DIR_CHARS} characters, without ..",
        )
    content = draft.content
    if draft.base64:
        try:
            content = base64.b64decode(content, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _invalid(reasons.FILE_CONTENT_INVALID, "content", "not Base64") from exc
    if len(content) > MAX_CONTENT_BYTES:
        raise InvalidArgument(
            reasons.FILE_CONTENT_EXCEED_LIMIT,
            f"content: {len(content)} bytes, the limit is {MAX_CONTENT_BYTES}",
            field="content",
            metadata={"size": str(len(content)), "limit": str(MAX_CONTENT_BYTES)},
        )
    mode = DEFAULT_MODE
    if draft.mode:
        if not _MODE.fullmatch(draft.mode):
            raise _invalid(reasons.FILE_MODE_INVALID, "file_mode", "octal, like 0644 or 0755")
        mode = int(draft.mode, 8)
    for field, account in (("file_owner", draft.owner), ("file_group", draft.group)):
        if account and not _ACCOUNT.fullmatch(account):
            raise _invalid(reasons.FILE_ACCOUNT_INVALID, field, f"{account[:64]!r} is not a name")
    spec = FileSpec(
        name, target.rstrip("/") or "/", mode, draft.owner, draft.group, draft.overwrite
    )
    return spec, content
