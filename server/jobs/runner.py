"""The server's background jobs as named tasks: started together, and on shutdown cancelled,
then awaited one by one, so that none is left running (the task map of Temporal's workers)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any


class Jobs:
    def __init__(self) -> None:
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def start(self, name: str, job: Coroutine[Any, Any, None]) -> None:
        """Runs `job` as a task named `name` (one job per name)."""
        if name in self._tasks:
            job.close()
            raise ValueError(f"a job named {name!r} is already running")
        self._tasks[name] = asyncio.create_task(job, name=name)

    async def stop(self) -> None:
        """Cancels every job, then waits for each to end (its cleanup included)."""
        tasks = list(self._tasks.values())
        self._tasks.clear()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
