"""Wake-up signals for watchers of an invocation. They carry ids only: the rows are the truth."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager


class InvocationEvents:
    def __init__(self) -> None:
        self._watchers: dict[str, set[asyncio.Event]] = defaultdict(set)

    @contextmanager
    def subscribe(self, invoke_id: str) -> Iterator[asyncio.Event]:
        """An event that is set whenever something of `invoke_id` changes."""
        event = asyncio.Event()
        self._watchers[invoke_id].add(event)
        try:
            yield event
        finally:
            watchers = self._watchers.get(invoke_id)
            if watchers is not None:
                watchers.discard(event)
                if not watchers:
                    del self._watchers[invoke_id]

    def notify(self, invoke_ids: Iterable[str]) -> None:
        for invoke_id in invoke_ids:
            for event in self._watchers.get(invoke_id, ()):
                event.set()

    def notify_all(self) -> None:
        for watchers in self._watchers.values():
            for event in watchers:
                event.set()

    def watcher_count(self) -> int:
        return sum(len(w) for w in self._watchers.values())
