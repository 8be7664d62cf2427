"""A workflow version whose ComfyUI never answers (machines Ready, billed, stopped unhealthy
before serving a job): its failed launches are counted per version, and once
``max_launch_attempts`` are reached it is held for ``UNANSWERED_HOLD``."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import machines_policy as policy
from conjure_actors.domain.machines_policy import (
    FAILURE_SERIES_GAP,
    UNANSWERED_HOLD,
    Unanswered,
    unanswered_counts,
    unanswered_stop,
    version_held,
)
from conjure_actors.domain.state import Machine, initial_state


def test_only_a_runcomfy_machine_that_served_nothing_counts() -> None:
    """A machine that served jobs had a ComfyUI that answered; an attached one is no launch."""
    assert unanswered_counts(kind="runcomfy", jobs_served=0)
    assert not unanswered_counts(kind="runcomfy", jobs_served=1)
    assert not unanswered_counts(kind="comfyui", jobs_served=0)


def test_the_series_is_held_from_the_stop_that_reaches_the_limit() -> None:
    """Two in a row: not held; the third holds it from then, for the hold's length."""
    s = None
    for now in (10.0, 20.0):
        s = unanswered_stop(s, what="HTTP 503", now=now, max_launch_attempts=3)
        assert not version_held(s, now=now)
    s = unanswered_stop(s, what="HTTP 502", now=30.0, max_launch_attempts=3)
    assert s == Unanswered(count=3, what="HTTP 502", held_at=30.0, last_at=30.0)
    assert version_held(s, now=30.0 + UNANSWERED_HOLD - 1)
    assert not version_held(s, now=30.0 + UNANSWERED_HOLD)


def test_a_straggler_during_the_hold_does_not_lift_it() -> None:
    """A machine launched before the hold, stopped during it, keeps the hold where it was."""
    held = Unanswered(count=3, what="HTTP 503", held_at=100.0)
    s = unanswered_stop(held, what="no connection", now=150.0, max_launch_attempts=3)
    assert s == Unanswered(count=4, what="no connection", held_at=100.0, last_at=150.0)


def test_a_stop_after_the_hold_starts_a_new_series() -> None:
    """Once the hold is over, the next such machine is the first of a new series."""
    held = Unanswered(count=3, what="HTTP 503", held_at=100.0)
    now = 100.0 + UNANSWERED_HOLD
    s = unanswered_stop(held, what="HTTP 503", now=now, max_launch_attempts=3)
    assert s == Unanswered(count=1, what="HTTP 503", held_at=None, last_at=now)


def test_a_stop_long_after_the_last_one_starts_a_new_series() -> None:
    """Two such machines a day apart are two failures: the second does not add to the first
    (before: a version that failed twice on Monday was held by Tuesday's first failure)."""
    s = None
    for now in (10.0, 20.0):
        s = unanswered_stop(s, what="HTTP 503", now=now, max_launch_attempts=3)
    s = unanswered_stop(s, what="HTTP 503", now=20.0 + 86_400.0, max_launch_attempts=3)
    assert (s.count, s.held_at) == (1, None)


def test_a_stop_within_the_gap_continues_the_series() -> None:
    """Machines of one failure come minutes apart: the gap is measured from the last stop."""
    s = None
    for now in (0.0, FAILURE_SERIES_GAP - 1, 2 * FAILURE_SERIES_GAP - 2):
        s = unanswered_stop(s, what="HTTP 503", now=now, max_launch_attempts=3)
    assert (s.count, s.held_at) == (3, 2 * FAILURE_SERIES_GAP - 2)


_ACTIONS = st.lists(
    st.one_of(
        st.just(("launch", 0.0)),
        st.just(("dead", 0.0)),
        st.just(("answers", 0.0)),
        st.tuples(st.just("wait"), st.floats(0.0, 2 * FAILURE_SERIES_GAP)),
    ),
    max_size=80,
)


@given(actions=_ACTIONS, limit=st.integers(1, 5), max_machines=st.integers(1, 4))
def test_paid_launches_of_a_version_are_bounded_until_a_reset(
    actions: list[tuple[str, float]], limit: int, max_machines: int
) -> None:
    """The pool's loop for one version (launch while not held, at most ``max_machines`` at
    once; each machine dies unanswered or answers): between two resets (a machine that
    answers, a hold that ran out, a series whose last stop is ``FAILURE_SERIES_GAP`` old) at
    most ``limit + max_machines - 1`` machines launch, and with one machine at a time at most
    ``limit`` (before: no bound but the job's timeout)."""
    series: Unanswered | None = None
    now = 0.0
    in_flight = 0
    launched = 0  # since the last reset
    for action, dt in actions:
        if action == "launch":
            if (
                series is not None
                and series.held_at is not None
                and not version_held(series, now=now)
            ):
                launched = 0  # the hold ran out: a new series may launch
            if version_held(series, now=now) or in_flight >= max_machines:
                continue
            in_flight += 1
            launched += 1
            assert launched <= limit + max_machines - 1
            if max_machines == 1:
                assert launched <= limit
        elif action == "dead" and in_flight:
            in_flight -= 1
            if (
                series is not None
                and series.held_at is None
                and policy.series_over(series, now=now)
            ):
                launched = 0  # its last stop is long past: this one starts a new series
            series = unanswered_stop(series, what="HTTP 503", now=now, max_launch_attempts=limit)
        elif action == "answers" and in_flight:
            in_flight -= 1
            series, launched = None, 0
        else:
            now += dt


def _machine(sid: str, stopped: float | None, *, reason: str = "unhealthy", **kw: Any) -> Any:
    return Machine(
        server_id=sid,
        status="stopped" if stopped is not None else "ready",
        kind="runcomfy",
        workflow_version=str(kw.pop("version", "v1")),
        stop_requested_at=stopped,
        stop_reason=reason if stopped is not None else None,
        **kw,
    )


def _log_state(*machines: Any) -> Any:
    state = initial_state()
    for m in machines:
        state.machines[m.server_id] = m
    return state


def test_the_series_is_rebuilt_from_the_logs_machines_in_the_order_they_stopped() -> None:
    state = _log_state(_machine("c", 300.0), _machine("a", 100.0), _machine("b", 200.0))
    (series,) = policy.unanswered_from_log(state, max_launch_attempts=3).values()
    assert (series.count, series.held_at) == (3, 300.0)


def test_a_machine_that_answered_or_served_ends_the_series_in_the_log() -> None:
    state = _log_state(
        _machine("a", 100.0),
        _machine("b", 200.0, reason="idle", healthy=True),
        _machine("c", 300.0),
        _machine("d", 400.0, reason="unhealthy", jobs_served=2),
        _machine("e", 500.0),
    )
    (series,) = policy.unanswered_from_log(state, max_launch_attempts=3).values()
    assert (series.count, series.held_at) == (1, None)


def test_a_series_of_the_log_ends_at_a_long_gap_between_stops() -> None:
    """The restart's rebuild keeps the gap rule: two stops a day before one are not its series."""
    day = 86_400.0
    state = _log_state(_machine("a", 100.0), _machine("b", 200.0), _machine("c", 200.0 + day))
    (series,) = policy.unanswered_from_log(state, max_launch_attempts=3).values()
    assert (series.count, series.held_at, series.last_at) == (1, None, 200.0 + day)


def test_a_running_machine_that_answered_leaves_no_series() -> None:
    state = _log_state(_machine("a", 100.0), _machine("b", None, healthy=True))
    assert policy.unanswered_from_log(state, max_launch_attempts=3) == {}
