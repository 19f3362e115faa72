"""The background jobs' runner: every job is cancelled on stop and waited for to the end of
its cleanup; a name runs one job."""

from __future__ import annotations

import asyncio

import pytest

from cloudassist.server.jobs.runner import Jobs


async def test_stop_cancels_every_job_and_waits_for_its_cleanup() -> None:
    started = {"a": asyncio.Event(), "b": asyncio.Event()}
    cleaned: list[str] = []

    async def job(name: str) -> None:
        started[name].set()
        try:
            await asyncio.Event().wait()
        finally:
            # A cleanup that itself awaits: stop() must not return before it ends.
            await asyncio.sleep(0)
            cleaned.append(name)

    jobs = Jobs()
    jobs.start("a", job("a"))
    jobs.start("b", job("b"))
    await asyncio.gather(*(e.wait() for e in started.values()))
    await jobs.stop()
    assert cleaned == ["a", "b"]


async def test_a_job_that_already_ended_is_stopped_quietly() -> None:
    jobs = Jobs()
    done = asyncio.Event()

    async def short() -> None:
        done.set()

    jobs.start("short", short())
    await done.wait()
    await jobs.stop()


async def test_a_name_runs_one_job() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    jobs = Jobs()
    jobs.start("x", forever())
    second = asyncio.sleep(0)
    with pytest.raises(ValueError, match="'x' is already running"):
        jobs.start("x", second)
    await jobs.stop()
