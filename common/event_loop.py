"""Which asyncio event loop the server and the agent run on.

`CLOUDASSIST_EVENT_LOOP=uvloop` runs them on uvloop when it is installed (the `uvloop`
extra); the default is asyncio's own loop. bench/RESULTS.md has the measurements behind the
default.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

ENV = "CLOUDASSIST_EVENT_LOOP"
CHOICES = ("asyncio", "uvloop")


class EventLoopError(Exception):
    pass


def loop_factory(name: str | None = None) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The factory of the loop `name` (default: from the environment); None: asyncio's."""
    name = (name if name is not None else os.environ.get(ENV, "")).strip() or "asyncio"
    if name not in CHOICES:
        raise EventLoopError(f"{ENV}: {name!r} is not one of {', '.join(CHOICES)}")
    if name == "asyncio":
        return None
    try:
        import uvloop
    except ImportError as error:
        raise EventLoopError(
            f"{ENV}=uvloop: uvloop is not installed (pip install 'cloudassist[uvloop]')"
        ) from error
    return uvloop.new_event_loop


def run(main: Coroutine[Any, Any, T], name: str | None = None) -> T:
    """asyncio.run on the chosen loop."""
    try:
        factory = loop_factory(name)
    except EventLoopError:
        main.close()
        raise
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main)
