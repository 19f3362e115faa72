"""ANSI colours for the CLI: on for terminals, off for pipes and files, off with NO_COLOR."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

ColorChoice = Literal["auto", "always", "never"]
COLOR_CHOICES: tuple[ColorChoice, ...] = ("auto", "always", "never")

Style = Literal["bold", "dim", "red", "green", "yellow", "blue", "cyan"]
_CODES: dict[Style, str] = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "cyan": "36",
}
_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def use_color(choice: str, isatty: bool, environ: Mapping[str, str]) -> bool:
    """`always` and `never` say it; `auto` means a terminal, unless NO_COLOR is set to
    anything but the empty string (https://no-color.org: a flag overrides the variable)."""
    if choice == "always":
        return True
    if choice == "never":
        return False
    return isatty and not environ.get("NO_COLOR")


def visible(text: str) -> str:
    """`text` without escape sequences: what a terminal shows of it."""
    return _ESCAPE.sub("", text)


@dataclass(frozen=True)
class Palette:
    """Paints text when enabled; a disabled palette returns text as it is."""

    enabled: bool

    def paint(self, text: str, *styles: Style) -> str:
        if not self.enabled or not styles or not text:
            return text
        codes = ";".join(_CODES[s] for s in styles)
        return f"\x1b[{codes}m{text}\x1b[0m"


PLAIN = Palette(False)
COLORED = Palette(True)

# What each detailed execution state looks like, by its name without the prefix.
_STATE_STYLES: dict[str, Style] = {
    "SUCCESS": "green",
    "FAILED": "red",
    "TIMEOUT": "red",
    "ABORTED": "red",
    "INVALID": "red",
    "ERROR": "red",
    "RUNNING": "yellow",
    "STOPPING": "yellow",
    "PENDING": "dim",
    "CANCELLED": "dim",
    "TERMINATED": "dim",
    # Coarse statuses of invocations and records.
    "FINISHED": "green",
    "PARTIAL_FAILED": "red",
    "STOPPED": "dim",
}


def paint_state(palette: Palette, name: str) -> str:
    """A state or status name (`SUCCESS`, `PARTIAL_FAILED`, ...) in its colour."""
    style = _STATE_STYLES.get(name)
    return palette.paint(name, style) if style else name
