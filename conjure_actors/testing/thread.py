"""A harness for synchronous callers: one long-lived ``trio.run`` in a background thread.

Hypothesis calls a state machine's rules as plain functions, one after the other, and the
simulated world (machines booting, prompts running, the runtime's actors) must live from one
rule to the next. Two ways keep "the async runtime inside each step":

1. one ``trio.run`` per step, carrying the MockClock across: every task dies at the end of
   a ``trio.run``, so the runtime and the cloud would have to be torn down and rebuilt at
   every step (a crash and a resume each time, and a cloud whose machines stop between
   steps): that tests something else than the rules say;
2. one ``trio.run`` for the whole example, in a background thread, driven step by step
   (this module). Each call (``submit``, ``advance`` ...) runs as a task inside that loop
   through ``trio.from_thread.run`` and returns when it is done; between calls the loop is
   idle: every task is blocked and, with autojump off, the MockClock moves only when a
   step advances it (:meth:`Harness.advance`). So the calling thread never races the
   runtime, and each step is deterministic.

We use 2. Trio's scheduler randomness is seeded by hypothesis (trio registers its
``random.Random`` with hypothesis), so a shrunk example replays exactly.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio
import trio.testing

from conjure_actors.domain import state as st
from conjure_actors.testing import invariants
from conjure_actors.testing.faults import Fault, TimedFault
from conjure_actors.testing.harness import Harness, HarnessError, HarnessSettings, open_harness
from conjure_actors.testing.requests import JobRequest

__all__ = ["HarnessThread", "run_harness"]

T = TypeVar("T")


class HarnessThread:
    """A :class:`Harness` running in its own thread; every method blocks until done.

    Use as a context manager (``with HarnessThread(settings) as h: ...``) or
    :meth:`open` / :meth:`close`.
    """

    def __init__(
        self, settings: HarnessSettings | None = None, *, out_dir: str | Path | None = None
    ) -> None:
        self.settings = settings or HarnessSettings()
        self._out_dir = out_dir
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._harness: Harness | None = None
        self._error: BaseException | None = None

    # ------------------------------------------------------------------ lifecycle

    def open(self) -> HarnessThread:
        """Start the thread, the cloud and the runtime."""
        if self._thread is not None:
            raise HarnessError("this HarnessThread is already open")
        self._thread = threading.Thread(target=self._main, name="conjure-harness", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._harness is None:
            raise HarnessError(f"the harness did not start: {self._error!r}") from self._error
        return self

    def close(self) -> None:
        """Stop the runtime and the cloud, end the thread (idempotent)."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        token, stop = self._token, self._stop
        if token is not None and stop is not None and thread.is_alive():
            # The run may have ended on its own (a failure): nothing left to stop then.
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join()
        if self._error is not None:
            error, self._error = self._error, None
            raise HarnessError(f"the harness failed while closing: {error!r}") from error

    def __enter__(self) -> HarnessThread:
        return self.open()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _main(self) -> None:
        try:
            trio.run(self._trio_main, clock=trio.testing.MockClock())
        except BaseException as exc:  # reported to the caller by open()/close()
            self._error = exc
        finally:
            self._ready.set()

    async def _trio_main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        self._stop = trio.Event()
        async with open_harness(self.settings, out_dir=self._out_dir) as harness:
            self._harness = harness
            self._ready.set()
            await self._stop.wait()

    # ------------------------------------------------------------------ calling in

    def call(self, fn: Callable[[Harness], Awaitable[T]]) -> T:
        """Run ``await fn(harness)`` inside the harness's trio loop; return its result."""
        harness, token = self._harness, self._token
        if harness is None or token is None or self._thread is None:
            raise HarnessError("the harness is not open")

        async def run() -> T:
            return await fn(harness)

        return trio.from_thread.run(run, trio_token=token)

    def read(self, fn: Callable[[Harness], T]) -> T:
        """Run ``fn(harness)`` (synchronous) inside the loop, e.g. to read the state."""

        async def run(h: Harness) -> T:
            return fn(h)

        return self.call(run)

    @property
    def harness(self) -> Harness:
        """The harness itself (touch it only through :meth:`call` / :meth:`read`)."""
        if self._harness is None:
            raise HarnessError("the harness is not open")
        return self._harness

    # ------------------------------------------------------------------ the steps

    def submit(self, request: JobRequest) -> str | None:
        return self.call(lambda h: h.submit(request))

    def cancel(self, job_id: str) -> None:
        self.call(lambda h: h.cancel(job_id))

    def set_budget(self, usd: float | None) -> None:
        self.call(lambda h: h.set_budget(usd))

    def lose_machine(self, index: int = 0) -> str | None:
        return self.call(lambda h: h.lose_machine(index))

    def inject(self, fault: Fault) -> None:
        self.call(lambda h: h.inject(fault))

    def schedule(self, faults: list[TimedFault]) -> None:
        self.read(lambda h: h.schedule(faults))

    def advance(self, seconds: float) -> None:
        self.call(lambda h: h.advance(seconds))

    def crash(self) -> int:
        return self.call(lambda h: h.crash())

    def start(self) -> None:
        self.call(lambda h: h.start())

    def restart(self) -> int:
        return self.call(lambda h: h.restart())

    def run_until_quiet(self, max_seconds: float | None = None) -> bool:
        return self.call(lambda h: h.run_until_quiet(max_seconds))

    def check(self) -> None:
        """Every invariant (raises :class:`~conjure_actors.testing.InvariantViolation`)."""
        self.read(invariants.check_all)

    def check_quiet(self) -> None:
        self.read(invariants.check_quiet)

    def save_log(self, path: str | Path) -> Path:
        return self.read(lambda h: h.save_log(path))

    @property
    def state(self) -> st.State:
        """A deep copy of the live state (safe to keep)."""
        return self.read(lambda h: st.copy_state(h.state))

    def spent_micros(self) -> int:
        return self.read(lambda h: h.spent_micros())

    def one_lease_micros(self) -> int:
        return self.settings.one_lease_micros()

    def job_ids(self) -> list[str]:
        return self.read(lambda h: h.job_ids())


def run_harness(
    settings: HarnessSettings | None = None, *, out_dir: str | Path | None = None
) -> HarnessThread:
    """``with run_harness(HarnessSettings(budget_usd=2)) as h: ...`` (a :class:`HarnessThread`)."""
    return HarnessThread(settings, out_dir=out_dir)


_ = Any
