"""Which agent hellos the server takes on now, and when a refused agent should come back.

A restarted server is met by its whole fleet at once. Taking every hello at once only queues
them (in the transport, which then refuses calls it cannot pick up, and in the database's
writer); refusing them all with the same delay brings them back together. So:

- a hello is admitted while the line of admitted hellos would be stored within about
  `line_seconds` at the rate the server is measured to store them, and the token bucket
  (`max_rate` a second; a whole line's worth at once) has a token; an admitted hello waits in
  the line (the caller stores at most a few at once);
- a refused hello is given the next free slot of the line after the admitted ones, served at
  the measured rate, so the refused come back spread out at the pace the server admits them.

The rate is the best of the last few windows of about a second in which hellos were refused,
starting from `max_rate`: an underestimate leaves the server idle while agents wait for slots
too far apart, and a window can be slow for reasons of its own (the burst of calls itself, a
busy database), while an overestimate costs a second refusal to agents told to come back too
early.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

# Seconds of completions a rate sample is taken over, and how many samples the rate is the
# best of.
WINDOW = 1.0
SAMPLES = 8


@dataclass
class Admission:
    """The admission rule; times are seconds on any monotonic clock the caller keeps to."""

    max_rate: float
    line_seconds: float = 20.0
    # The longest wait a refused agent is given, however long the line; and the shortest.
    max_wait: float = 120.0
    min_wait: float = 0.2
    # The measured rate is never taken below this (hellos a second).
    min_rate: float = 20.0
    _samples: deque[float] = field(default_factory=lambda: deque(maxlen=SAMPLES), init=False)
    # Hellos admitted and not yet stored.
    admitted: int = field(default=0, init=False)
    rate: float = field(default=0.0, init=False)
    _tokens: float = field(default=0.0, init=False)
    _updated: float | None = field(default=None, init=False)
    # When the last refused agent was told to come back.
    _line_ends: float = field(default=0.0, init=False)
    _window_start: float | None = field(default=None, init=False)
    _window_done: int = field(default=0, init=False)
    # Whether hellos were refused during the current window (the line was full: the window
    # measures how fast the server stores hellos, not how fast agents come).
    _window_busy: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        self.min_rate = min(self.min_rate, self.max_rate)
        if self.max_rate <= 0 or self.line_seconds <= 0:
            raise ValueError("admission: max_rate and line_seconds must be positive")
        self.rate = self.max_rate
        self._samples.append(self.max_rate)
        self._tokens = self._burst

    def admit(self, now: float) -> float | None:
        """None when the hello is admitted (the caller calls `done` when it is stored or
        failed); otherwise the seconds the agent should wait before it tries again."""
        self._refill(now)
        self._measure(now)
        line = max(1.0, self.rate * self.line_seconds)
        if self.admitted < line and self._tokens >= 1:
            self._tokens -= 1
            self.admitted += 1
            return None
        self._window_busy = True
        # After the admitted ones are stored (at the speed measured, even above `max_rate`),
        # and never before the bucket has a token.
        speed = max(self.rate, max(self._samples))
        ready = now + max(self.admitted / speed, (1 - self._tokens) / self.max_rate)
        self._line_ends = max(self._line_ends, ready) + 1 / self.rate
        return min(self.max_wait, max(self.min_wait, self._line_ends - now))

    def done(self, now: float) -> None:
        """An admitted hello is stored (or failed): its place in the line is free."""
        self.admitted = max(0, self.admitted - 1)
        self._window_done += 1
        self._measure(now)

    @property
    def _burst(self) -> float:
        return self.max_rate * self.line_seconds

    def _measure(self, now: float) -> None:
        if self._window_start is None:
            self._window_start = now
            return
        elapsed = now - self._window_start
        if elapsed < WINDOW:
            return
        if self._window_busy:
            self._samples.append(self._window_done / elapsed)
            self.rate = min(self.max_rate, max(self.min_rate, max(self._samples)))
        self._window_start = now
        self._window_done = 0
        self._window_busy = False

    def _refill(self, now: float) -> None:
        if self._updated is not None and now > self._updated:
            refilled = self._tokens + (now - self._updated) * self.max_rate
            self._tokens = min(self._burst, refilled)
        if self._updated is None or now > self._updated:
            self._updated = now
