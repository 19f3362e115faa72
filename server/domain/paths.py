"""What counts as an absolute directory on the instances that run a command.

A relative directory would be resolved against the agent's own current directory, which nobody
chose, so every directory a client names (a working directory, SendFile's target) is absolute,
and has no `..` component: the directory a script runs in is the one the request says.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cloudassist.server.domain import reasons
from cloudassist.server.domain.errors import InvalidArgument
from cloudassist.server.domain.limits import Limits

if TYPE_CHECKING:  # the model imports SendFile's rules, which use this module
    from cloudassist.server.domain.model import CommandType

# A drive path (C:\dir, C:/dir) or a UNC path (\\server\share).
_WINDOWS_ABSOLUTE = re.compile(r"[A-Za-z]:[\\/]|[\\/]{2}[^\\/]+[\\/][^\\/]")
_WINDOWS_SEPARATORS = re.compile(r"[\\/]")
# Where each command type runs (Linux, Windows): PowerShell on both (pwsh on a Linux agent).
_RUNS_ON = {
    "RUN_SHELL_SCRIPT": (True, False),
    "RUN_BAT_SCRIPT": (False, True),
    "RUN_POWERSHELL_SCRIPT": (True, True),
}
_LINUX_FORM = "starting with / (like /srv/app)"
_WINDOWS_FORM = r"a drive or UNC path (like C:\app or \\server\share)"


def is_absolute_linux_dir(path: str) -> bool:
    """Starts with / and has no `..` component."""
    return path.startswith("/") and ".." not in path.split("/")


def is_absolute_windows_dir(path: str) -> bool:
    """A drive or UNC path without a `..` component."""
    return bool(_WINDOWS_ABSOLUTE.match(path)) and ".." not in _WINDOWS_SEPARATORS.split(path)


def check_working_dir(
    working_dir: str, command_type: CommandType, limits: Limits, whose: str = ""
) -> str:
    """Empty (the home of the user the script runs as) or an absolute directory where the
    command type runs; `whose` says where a value the request did not give came from."""
    if len(working_dir) > limits.working_dir_chars or any(
        ord(ch) < 32 or ord(ch) == 127 for ch in working_dir
    ):
        raise InvalidArgument(
            reasons.INVALID_WORKING_DIR,
            f"working_dir: at most {limits.working_dir_chars} characters, no control characters",
            field="working_dir",
        )
    linux, windows = _RUNS_ON[command_type]
    if not working_dir or (linux and is_absolute_linux_dir(working_dir)):
        return working_dir
    if windows and is_absolute_windows_dir(working_dir):
        return working_dir
    kind = command_type.removeprefix("RUN_").removesuffix("_SCRIPT").lower()
    forms = ", or ".join([*([_LINUX_FORM] if linux else []), *([_WINDOWS_FORM] if windows else [])])
    raise InvalidArgument(
        reasons.INVALID_WORKING_DIR,
        f"working_dir: {whose}{working_dir[:80]!r} is not an absolute directory; a {kind} "
        f"script needs one {forms}, without .. (empty: the home directory of the user the "
        "script runs as)",
        field="working_dir",
        metadata={"working_dir": working_dir[:128]},
    )
