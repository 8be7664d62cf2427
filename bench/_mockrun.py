"""What the pipeline benchmarks share (``bench/run.py``, ``bench/day.py``, ``bench/ws_trace.py``):
the run settings against a simulated cloud, a MockClock run that moves simulated time
only when nothing but the clock can make progress, and the count arguments' type."""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any, Final

import trio
import trio.testing

from conjure_actors.config import Config, PoolConfig, RetryConfig, RunComfyConfig, Secret

VERSION = "wv-conjure-flux-mesh-1"  # (the simulated account has it: an unknown one is refused)
MOCK = trio.testing.MockClock


def positive_int(text: str) -> int:
    """argparse type for a count: an integer of at least 1 (0 jobs has no figure per job,
    and a run of 0 jobs may wait forever)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def non_negative_int(text: str) -> int:
    """argparse type for a count that may be 0 (a knob that 0 turns off)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return value


def positive_number(text: str) -> float:
    """argparse type for a finite number above 0 (seconds, a factor)."""
    value = float(text)
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number above 0, not {text}")
    return value


def non_negative_number(text: str) -> float:
    """argparse type for a finite number of 0 or more (seconds that may be none)."""
    value = float(text)
    if not (value >= 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a number of 0 or more, not {text}")
    return value


def config_for(cloud: Any, *, version: str = VERSION, **pool: Any) -> Config:
    """Settings for a run of workflow ``version`` against ``cloud`` (a simulated cloud),
    with these pool knobs."""
    return Config(
        runcomfy=RunComfyConfig(
            user_id=cloud.user_id,
            api_token=Secret(cloud.token),
            base_url=cloud.base_url,
            workflow_version=version,
        ),
        pool=PoolConfig(**pool),
        retry=RetryConfig(initial=1.0, max_delay=10.0),
    )


PARK: Final = 0.05
"""Real seconds the driver leaves the event loop blocked, at most, while a worker-thread
token is held and nothing runs (see ``run_on_mock``)."""


def run_on_mock(
    fn: Any,
    *args: Any,
    on_drive: Callable[[], None] | None = None,
    step: float | None = None,
) -> Any:
    """Run ``fn(*args)`` on a MockClock that jumps to the next deadline only once every task
    is blocked AND no worker thread is in flight. Plain autojump also jumps while a task
    waits for a file written in a worker thread (the pipeline's fsynced outputs): simulated
    time then races ahead with the disk (450 simulated seconds for 1,000 jobs instead of 30),
    and every timer (pool polls, monitor ticks, keep-alives) fires that many more times,
    which is not the pipeline's cost. ``on_drive`` is called once from the driving task when
    it starts.

    While a thread runs and nothing else can, the event loop blocks in its I/O wait until
    the thread's answer wakes it (as on the real clock; mock time stands still: its deadlines
    are never due): the answer of a ``trio.to_thread.run_sync`` call releases the driver,
    and, for a token held without a thread call (the disk committer's, while it waits to
    take a batch), ``PARK`` real seconds of nothing at all do. It slept 0.1 ms at a time and
    looked again: ~25 wake-ups of the trio thread per disk batch, 3-5 per job of the
    pipeline, each with the CPU's caches cold after it (the same wake-ups put in the bare
    loop cost it +12% CPU per job, session 28), where a run on the real clock wakes once.
    ``step``: instead, sleep that many real seconds at a time and look again (as before;
    ``bench/day.py``'s seeded runs keep it)."""
    parked: list[trio.CancelScope] = []
    run_sync = trio.to_thread.run_sync

    async def answered(*args: Any, **kwargs: Any) -> Any:
        try:
            return await run_sync(*args, **kwargs)
        finally:
            for scope in parked:
                scope.cancel()

    async def main() -> Any:
        clock = trio.lowlevel.current_clock()
        assert isinstance(clock, MOCK)
        limiter = trio.to_thread.current_default_thread_limiter()

        async def drive() -> None:
            if on_drive is not None:
                on_drive()
            while True:
                await trio.testing.wait_all_tasks_blocked()
                if limiter.statistics().borrowed_tokens:
                    if step is not None:
                        time.sleep(step)  # noqa: ASYNC251 - no simulated time may pass here
                        await trio.lowlevel.checkpoint()
                        continue
                    # No simulated time may pass: wait in the loop's I/O wait instead.
                    with trio.CancelScope() as scope:
                        parked.append(scope)
                        try:
                            await trio.testing.wait_all_tasks_blocked(PARK)
                        finally:
                            parked.remove(scope)
                    continue
                gap = trio.lowlevel.current_statistics().seconds_to_next_deadline
                if gap != math.inf:
                    clock.jump(gap)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drive)
            result = await fn(*args)
            nursery.cancel_scope.cancel()
        return result

    trio.to_thread.run_sync = answered
    try:
        return trio.run(main, clock=MOCK())
    finally:
        trio.to_thread.run_sync = run_sync
