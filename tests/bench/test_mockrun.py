"""bench/_mockrun.py's run_on_mock: simulated time stands still while a worker thread runs,
and the event loop waits for the thread's answer in its I/O wait, not in short sleeps."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import trio

# Last on the path: bench/eventlog.py must not shadow the eventlog package.
sys.path.append(str(Path(__file__).resolve().parent.parent.parent / "bench"))

import _mockrun


class _Passes(trio.abc.Instrument):
    """Counts the scheduler's passes (one I/O wait each)."""

    def __init__(self) -> None:
        self.passes = 0

    def before_io_wait(self, timeout: float) -> None:
        self.passes += 1


def test_a_thread_call_is_waited_for_in_a_few_passes_with_time_standing_still() -> None:
    """A 50 ms thread call: mock time does not move, and the loop passes a handful of times
    (it slept 0.1 ms at a time and looked again: hundreds of passes)."""
    passes = _Passes()
    release = threading.Event()

    def work() -> None:
        release.wait(0.05)

    async def main() -> tuple[float, float]:
        before = trio.current_time()
        await trio.to_thread.run_sync(work)
        during = trio.current_time() - before
        await trio.sleep(5)  # with no thread in flight, time jumps
        return during, trio.current_time() - before

    started = time.monotonic()
    during, after = _mockrun.run_on_mock(
        main, on_drive=lambda: trio.lowlevel.add_instrument(passes)
    )
    assert time.monotonic() - started < 5  # 5 simulated seconds, not real ones
    assert during == 0
    assert after == 5
    assert passes.passes < 20


def test_a_token_held_without_a_thread_call_does_not_hang_the_run() -> None:
    """A task holding a worker-thread token while it waits for the loop to be idle (as the
    disk committer does) is woken, gives the token back, and the clock moves again."""

    async def main() -> float:
        limiter = trio.to_thread.current_default_thread_limiter()
        holder = object()
        await limiter.acquire_on_behalf_of(holder)
        try:
            await trio.testing.wait_all_tasks_blocked()
        finally:
            limiter.release_on_behalf_of(holder)
        before = trio.current_time()
        await trio.sleep(3)
        return trio.current_time() - before

    assert _mockrun.run_on_mock(main) == 3
