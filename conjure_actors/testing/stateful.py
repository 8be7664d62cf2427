"""The stateful test: a hypothesis ``RuleBasedStateMachine`` over the whole simulated system.

Rules: submit a job (random workflow, priority), cancel a job, inject a fault (now, or a
schedule of faults that fire as the clock advances), advance the clock, crash the runtime
and resume it, change the budget, lose a machine. After every step every invariant of
:mod:`conjure_actors.testing.invariants` is checked; at the end (teardown) the faults stop,
the clock runs on, and every job must have ended, no machine may run and the ledger must
equal the cloud's bills exactly.

The simulated world lives in a :class:`~conjure_actors.testing.HarnessThread` (one
``trio.run`` in a background thread for the whole example; see that module for why).

On a failure, besides the shrunk steps hypothesis prints, the machine notes the harness seed
and saves the event log of the failing run to ``$CONJURE_HARNESS_FAILURES`` (default
``./harness-failures/``) as ``<Machine>-seed<seed>.log``, an ordinary event-log file:
``python -m conjure_actors replay harness-failures/ConjureStateMachine-seed42.log`` shows
what happened.

Subclass it to add your own rules or invariants (see the README, "Writing your own
property"); :meth:`ConjureStateMachine.harness_settings` chooses the world.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import note
from hypothesis import strategies as st
from hypothesis.control import current_build_context
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from conjure_actors.testing.faults import Fault, TimedFault
from conjure_actors.testing.harness import HarnessSettings
from conjure_actors.testing.requests import JobRequest
from conjure_actors.testing.strategies import budgets, fault_schedules, faults, job_requests
from conjure_actors.testing.thread import HarnessThread

__all__ = ["FAILURES_ENV", "ConjureStateMachine", "failures_dir"]

FAILURES_ENV = "CONJURE_HARNESS_FAILURES"


def failures_dir() -> Path:
    """Where failing runs' event logs go (``$CONJURE_HARNESS_FAILURES`` or
    ``./harness-failures``)."""
    return Path(os.environ.get(FAILURES_ENV, "harness-failures"))


def _is_final() -> bool:
    """True during hypothesis's last replay of the shrunk failing example."""
    try:
        return bool(current_build_context().is_final)
    except Exception:  # outside a hypothesis run: treat every failure as final
        return True


class ConjureStateMachine(RuleBasedStateMachine):
    """Random interleavings of jobs, cancels, faults, crashes, budgets and lost machines."""

    jobs = Bundle("jobs")
    #: Clock steps (simulated seconds) the ``advance`` rule picks from.
    CLOCK_STEPS: ClassVar[tuple[float, ...]] = (1.0, 5.0, 20.0, 60.0, 180.0, 600.0)

    def __init__(self) -> None:
        super().__init__()
        self.h: HarnessThread | None = None
        self.seed = 0
        self._failed = False

    # ------------------------------------------------------------------ the world

    def harness_settings(self, seed: int, budget: float | None, machines: int) -> HarnessSettings:
        """The world of one example; override to change timings, pool or retry policy."""
        return HarnessSettings(seed=seed, budget_usd=budget, max_machines=machines)

    @property
    def harness(self) -> HarnessThread:
        if self.h is None:
            raise RuntimeError("the harness is not open (initialize() did not run)")
        return self.h

    @contextlib.contextmanager
    def watch(self) -> Iterator[None]:
        """Any failure inside: note the seed and save the log (on the final, shrunk run).
        Wrap the body of your own rules in it; invariants (yours too) are covered."""
        try:
            yield
        except BaseException as exc:
            self._failed = True
            self._report(exc)
            raise

    def _report(self, exc: BaseException) -> None:
        if not _is_final() or self.h is None:
            return
        name = type(self).__name__
        note(f"harness seed={self.seed} ({name}); failure: {type(exc).__name__}")
        try:
            path = self.h.save_log(failures_dir() / f"{name}-seed{self.seed}.log")
        except Exception as save_exc:  # the harness may be what broke
            note(f"could not save the event log: {save_exc!r}")
            return
        message = (
            f"event log of the failing run saved to {path}\n"
            f"  see what happened: python -m conjure_actors replay {path}"
        )
        note(message)
        print(message, file=sys.stderr)

    # ------------------------------------------------------------------ rules

    @initialize(
        seed=st.integers(0, 2**16),
        budget=budgets(),
        machines=st.integers(1, 3),
    )
    def open_world(self, seed: int, budget: float | None, machines: int) -> None:
        self.seed = seed
        with self.watch():
            self.h = HarnessThread(self.harness_settings(seed, budget, machines)).open()

    @rule(target=jobs, request=job_requests())
    def submit(self, request: JobRequest) -> Any:
        with self.watch():
            job_id = self.harness.submit(request)
        return multiple(job_id) if job_id is not None else multiple()

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        with self.watch():
            self.harness.cancel(job_id)

    @rule(fault=faults())
    def inject_fault(self, fault: Fault) -> None:
        with self.watch():
            self.harness.inject(fault)

    @rule(schedule=fault_schedules(max_faults=3, horizon=600.0))
    def schedule_faults(self, schedule: list[TimedFault]) -> None:
        with self.watch():
            self.harness.schedule(schedule)

    @rule(data=st.data())
    def advance_clock(self, data: st.DataObject) -> None:
        seconds = data.draw(st.sampled_from(self.CLOCK_STEPS), label="seconds")
        with self.watch():
            self.harness.advance(seconds)

    @rule()
    def crash_and_resume(self) -> None:
        with self.watch():
            self.harness.restart()

    @rule(usd=budgets())
    def change_budget(self, usd: float | None) -> None:
        with self.watch():
            self.harness.set_budget(usd)

    @rule(index=st.integers(0, 7))
    def lose_machine(self, index: int) -> None:
        with self.watch():
            self.harness.lose_machine(index)

    # ------------------------------------------------------------------ invariants

    @precondition(lambda self: self.h is not None)
    @invariant()
    def invariants_hold(self) -> None:
        with self.watch():
            self.harness.check()

    def check_invariants(self, *args: Any, **kwargs: Any) -> Any:
        # Hypothesis runs every @invariant (a subclass's too) through this method: a
        # failing one is reported like a failing rule.
        with self.watch():
            return super().check_invariants(*args, **kwargs)

    def teardown(self) -> None:
        h, self.h = self.h, None
        if h is None:
            return
        try:
            if not self._failed:
                self.h = h  # for _report
                with self.watch():
                    h.run_until_quiet()
                    self.final_checks(h)
        finally:
            self.h = None
            h.close()

    def final_checks(self, h: HarnessThread) -> None:
        """The checks once the run is quiet (teardown): every invariant, and quiet ones.
        Override to check otherwise (a subclass that excuses what it cannot know)."""
        h.check()
        h.check_quiet()
