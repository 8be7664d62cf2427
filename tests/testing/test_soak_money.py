"""The stateful harness with the money faults the default strategies do not draw: a 502/504
to ``POST /prompt`` after the prompt was queued, a ComfyUI restart during a prompt, a
``DELETE`` answered 200 that did not take, a listing that misses a running machine (taken
for lost, found up later). Every invariant of the harness holds after every step, except
that a machine the runtime was just fooled about (within ``GRACE`` s) may run unknown to
it; at the end no machine runs and the ledger equals the cloud's bill exactly.

Slow: run it long with ``HYPOTHESIS_PROFILE=fuzz``."""

from __future__ import annotations

from typing import Any

import attrs
import pytest
import trio
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

from conjure_actors.domain import state as dst
from conjure_actors.testing import ConjureStateMachine, stateful_settings
from conjure_actors.testing import invariants as inv
from conjure_actors.testing.faults import (
    DeleteDoesNotTake,
    Fault,
    Knobs,
    LaunchesLag,
    ListingMisses,
    TimedFault,
    cloud_tricks,
)
from conjure_actors.testing.strategies import fault_knobs, faults

pytestmark = pytest.mark.slow

GRACE = 120.0
"""Seconds after the last trick on a machine during which it may run unknown to the runtime
(a few listings: the runtime sees it up again and stops it)."""


@st.composite
def money_knobs(draw: st.DrawFn) -> Knobs:
    """The default knobs, plus the gateway error after accept and a restart mid-prompt."""
    base = draw(fault_knobs())
    comfyui = attrs.evolve(
        base.comfyui,
        gateway_error_after_accept_rate=draw(st.sampled_from((0.0, 0.1, 0.3, 0.6))),
        restart_during_prompt=draw(st.none() | st.integers(1, 3)),
    )
    return Knobs(runcomfy=base.runcomfy, comfyui=comfyui)


def money_faults() -> st.SearchStrategy[Fault]:
    return st.one_of(
        faults(),
        money_knobs(),
        st.builds(DeleteDoesNotTake, st.integers(1, 3)),
        st.builds(ListingMisses, st.integers(0, 7), st.integers(1, 30)),
        st.builds(LaunchesLag, st.sampled_from((0, 5, 15, 30))),
    )


def check_machines_but_fooled(h: Any) -> list[str]:
    """check_machines, leaving out the machines a trick fooled the runtime about lately."""
    if not h.running:
        return []
    tricks = cloud_tricks(h)
    now = trio.current_time()
    state = h.state
    alive = {
        m.server_id
        for m in state.machines.values()
        if m.kind == "runcomfy" and m.status not in dst.MACHINE_GONE
    }
    unknown = inv.unaccounted(
        h,
        [
            sid
            for sid in h.cloud.running()
            if sid not in alive and not tricks.fooling(sid, now, GRACE)
        ],
    )
    if unknown:
        return [
            f"machines: {len(unknown)} machine(s) run in the cloud that the runtime does not"
            f" hold ({', '.join(sorted(unknown))}) that none of the"
            f" {len(state.launch_requests)} open launch intent(s) accounts for"
        ]
    return []


def _unknowable(h: Any, problem: str) -> bool:
    """A ledger problem about a machine a listing left out (``ListingMisses``,
    ``LaunchesLag``) that the cloud stopped by itself (vanished, lease_expired) or that a
    resume found "gone" while it was only left out. The pool looks a machine it knows up
    (``GET /servers/{id}``) before taking it for lost, in its listings, at a resume and
    after a stop that did not take (ce967ea), but a ghost launch (its answer lost, so no id
    to look up) whose machine the listings hide until it went cannot be known by any
    runtime: without this excuse the fuzz soak fails there (seed 45841: LaunchesLag and
    vanish_after, "the cloud billed 825 µ$ for a machine the runtime never knew")."""
    if not problem.startswith("ledger: "):
        return False
    hidden = cloud_tricks(h).ever_hidden
    bills = {b.server_id: b for b in h.cloud.billing()}
    for token in problem.replace(",", " ").split():
        if token in hidden and token in bills:
            # (lease_expired: left out until its lease ran out; were it shown up and left
            # running, check_machines_but_fooled would say so GRACE s after)
            went = bills[token].reason in ("vanished", "lease_expired")
            return went or "stopping at the crash" in problem
    return False


def check_all_money(h: Any) -> None:
    problems: list[str] = []
    for check in inv.CHECKS:
        if check is inv.check_machines:
            problems.extend(check_machines_but_fooled(h))
        else:
            problems.extend(p for p in check(h) if not _unknowable(h, p))
    if problems:
        raise inv.InvariantViolation(problems)


def check_quiet_money(h: Any) -> None:
    """check_quiet, with the same excuse as check_all_money for the ledger."""
    try:
        inv.check_quiet(h)
    except inv.InvariantViolation as exc:
        left = [p for p in exc.problems if not _unknowable(h, p)]
        if left:
            raise inv.InvariantViolation(left) from None


class MoneyStateMachine(ConjureStateMachine):
    @rule(fault=money_faults())
    def inject_money_fault(self, fault: Fault) -> None:
        with self.watch():
            self.harness.inject(fault)

    @rule(
        schedule=st.lists(
            st.builds(TimedFault, st.integers(0, 600).map(float), money_faults()), max_size=3
        ).map(lambda xs: sorted(xs, key=lambda t: t.after))
    )
    def schedule_money_faults(self, schedule: list[TimedFault]) -> None:
        with self.watch():
            self.harness.schedule(schedule)

    def final_checks(self, h: Any) -> None:
        # The parent's, with the filtered checks.
        h.read(check_all_money)
        h.read(check_quiet_money)

    @precondition(lambda self: self.h is not None)
    @invariant()
    def invariants_hold(self) -> None:
        """check_all, but a machine the runtime was fooled about lately may run unknown."""
        with self.watch():
            self.harness.read(check_all_money)


MoneyStateMachine.TestCase.settings = stateful_settings()
TestMoneyStateMachine = MoneyStateMachine.TestCase
