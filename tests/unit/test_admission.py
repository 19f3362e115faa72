"""Agent admission: hellos are admitted while the line is short, the others are told when to
come back, spread out at the rate the server is measured to store hellos."""

from __future__ import annotations

import pytest

from cloudassist.server.domain.admission import Admission


def test_a_quiet_server_admits_every_hello() -> None:
    admission = Admission(max_rate=100)
    for n in range(1000):
        now = n * 0.05  # 20 a second, each stored at once
        assert admission.admit(now) is None
        admission.done(now)
    assert admission.admitted == 0


def test_a_burst_beyond_the_line_is_told_to_come_back_in_distinct_slots() -> None:
    admission = Admission(max_rate=100, line_seconds=2)
    decisions = [admission.admit(0.0) for _ in range(1000)]
    admitted = [d for d in decisions if d is None]
    waits = [d for d in decisions if d is not None]
    # The line: two seconds of hellos at the rate.
    assert len(admitted) == 200
    assert len(waits) == 800
    # Each refused agent gets its own slot, 1/rate apart, after the admitted ones are stored.
    assert waits == sorted(waits)
    assert waits[0] == pytest.approx(200 / 100 + 1 / 100)
    assert waits[-1] == pytest.approx(waits[0] + 799 / 100)


def test_no_wait_is_shorter_than_the_minimum_nor_longer_than_the_maximum() -> None:
    admission = Admission(max_rate=10, line_seconds=1, min_wait=0.5, max_wait=30)
    waits = [w for w in (admission.admit(0.0) for _ in range(1000)) if w is not None]
    assert min(waits) >= 0.5
    assert max(waits) == 30


def test_agents_that_come_back_at_their_slot_are_admitted() -> None:
    """A server storing 50 hellos a second (100 allowed), 2,000 agents at once: every agent
    is connected after a few attempts, and the whole fleet in about 2,000 / 50 seconds."""
    admission = Admission(max_rate=100, line_seconds=1)
    arrivals: list[tuple[float, int]] = [(0.0, n) for n in range(2000)]
    attempts = [0] * 2000
    line: list[float] = []  # when each admitted hello will be stored
    connected_at: dict[int, float] = {}
    time = 0.0
    while arrivals or line:
        arrivals.sort()
        next_arrival = arrivals[0][0] if arrivals else float("inf")
        next_done = line[0] if line else float("inf")
        if next_done <= next_arrival:
            time = line.pop(0)
            admission.done(time)
            continue
        time, agent = arrivals.pop(0)
        attempts[agent] += 1
        wait = admission.admit(time)
        if wait is None:
            stored = max(time, line[-1] if line else time) + 1 / 50
            line.append(stored)
            connected_at[agent] = stored
        else:
            arrivals.append((time + wait, agent))
    assert len(connected_at) == 2000
    assert max(connected_at.values()) < 2000 / 50 * 1.25
    # The rate was learned: no agent is refused more than four times.
    assert max(attempts) <= 5
    assert admission.rate == pytest.approx(50, rel=0.3)


def test_the_token_bucket_caps_the_rate_of_admissions() -> None:
    """The bucket holds a line's worth (`line_seconds` at `max_rate`) and refills at
    `max_rate`, however fast the line is stored."""
    admission = Admission(max_rate=10, line_seconds=2)
    assert sum(admission.admit(0.0) is None for _ in range(50)) == 20
    for _ in range(20):
        admission.done(0.0)
    # A second later the bucket has ten tokens more.
    assert sum(admission.admit(1.0) is None for _ in range(50)) == 10


def test_the_rule_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        Admission(max_rate=0)
