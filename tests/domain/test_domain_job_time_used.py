"""A job's ``retry.total_timeout`` counts the time it spent inside runs, all of them: a
restart (``serve`` after a deploy, a crash, ``run --resume``) gives it what it has left, not
its whole time again; the time no process was alive is never counted."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as hyp

from conjure_actors import lifecycle as rt
from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import ACCRUE_INTERVAL, State, apply, initial_state

WF = "e" * 64
TOTAL = 2100.0
TAIL = ACCRUE_INTERVAL


def fold(*events: Any) -> State:
    state = initial_state()
    for event in events:
        apply(state, event)
    return state


def started(run_id: str, at: float) -> ev.SystemStarted:
    return ev.SystemStarted(run_id=run_id, version="0", mode="simulated", at=at)


def submitted(at: float, job_id: str = "j1") -> ev.JobSubmitted:
    return ev.JobSubmitted(job_id=job_id, workflow_sha256=WF, at=at)


def last_event(at: float) -> ev.BudgetWarning:
    """An event of a run that crashed after it (no SystemStopped)."""
    return ev.BudgetWarning(spent_micros=1, limit_micros=2, at=at)


def test_a_job_resumed_after_a_crash_keeps_only_the_time_it_had_left() -> None:
    """2000 s in run 1 (crashed, its last event at 2100: it may have lived ACCRUE_INTERVAL
    more, unlogged): run 2 gives it 70 s, not 2100."""
    state = fold(started("r1", 0.0), submitted(100.0), last_event(2100.0), started("r2", 5000.0))
    assert decide.job_deadline(state, "j1", total_timeout=TOTAL) == 5000.0 + 100.0 - TAIL


def test_the_next_process_actor_starts_do_not_end_a_crashed_run() -> None:
    """Its actors start (logged) before its SystemStarted, days after the crash: the
    crashed run ends at its own last event, not at theirs."""
    state = fold(
        started("r1", 0.0),
        submitted(100.0),
        last_event(400.0),
        rt.ActorStarted("root/machines", 1, 90_000.0),
        rt.ActorStarted("root/jobs", 1, 90_000.0),
        started("r2", 90_000.0),
    )
    assert state.jobs["j1"].time_used == 300.0 + TAIL


def test_a_cleanly_stopped_run_counts_up_to_its_stop() -> None:
    """A run that stopped counts to its SystemStopped, not to the next run's start."""
    state = fold(
        started("r1", 0.0),
        submitted(100.0),
        ev.SystemStopped(reason="signal", at=1000.0),
        started("r2", 90_000.0),
    )
    assert state.jobs["j1"].time_used == 900.0
    assert decide.job_deadline(state, "j1", total_timeout=TOTAL) == 90_000.0 + TOTAL - 900.0


def test_a_job_submitted_in_this_run_has_its_whole_time() -> None:
    """Earlier runs count nothing for a job submitted after them."""
    state = fold(started("r1", 0.0), last_event(500.0), started("r2", 800.0), submitted(900.0))
    assert state.jobs["j1"].time_used == 0.0
    assert decide.job_deadline(state, "j1", total_timeout=TOTAL) == 900.0 + TOTAL


def test_a_finished_job_is_not_counted_again() -> None:
    """A job that ended in an earlier run keeps no running time (it has no deadline)."""
    state = fold(
        started("r1", 0.0),
        submitted(10.0),
        ev.JobCancelled(job_id="j1", reason="user", at=20.0),
        last_event(500.0),
        started("r2", 800.0),
    )
    assert state.jobs["j1"].time_used == 0.0
    assert state.jobs["j1"].runs_used == 0


def test_the_timeout_after_several_runs_says_what_it_used_and_how_to_give_more() -> None:
    """The failure names the time over how many runs, and the setting that gives it more."""
    state = fold(
        started("r1", 0.0),
        submitted(0.0),
        ev.SystemStopped(reason="signal", at=1500.0),
        started("r2", 9000.0),
        ev.JobQueued(job_id="j1", at=9000.0),
    )
    failed = decide.time_out_job(state, "j1", total_timeout=1200.0, at=9010.0)
    assert failed.error_type == "Timeout"
    assert "1510 s over 2 runs" in failed.message
    assert "retry.total_timeout" in failed.message
    assert "CONJURE_RETRY_TOTAL_TIMEOUT" in failed.message


def test_a_job_out_of_time_at_the_start_of_a_run_is_known_at_once() -> None:
    """Its deadline is already behind the run's start: it fails before anything is launched."""
    state = fold(
        started("r1", 0.0),
        submitted(0.0),
        ev.SystemStopped(reason="signal", at=1500.0),
        started("r2", 9000.0),
    )
    assert decide.job_deadline(state, "j1", total_timeout=1200.0) <= 9000.0


RUNS = hyp.lists(
    hyp.tuples(
        hyp.integers(0, 100_000),  # the gap before the run (no process alive)
        hyp.integers(0, 10_000),  # the run's length
        hyp.booleans(),  # crashed (no SystemStopped: its end is its last event)
        hyp.booleans(),  # its process logs its actors' starts before its SystemStarted
    ),
    min_size=1,
    max_size=6,
)


@given(runs=RUNS, data=hyp.data())
def test_the_time_counted_is_the_time_inside_runs_since_submission(
    runs: list[tuple[int, int, bool, bool]], data: hyp.DataObject
) -> None:
    """Whatever the runs and the gaps between them (and a process's actors starting before
    its run): the time counted is the job's time inside runs, a crashed run's counted up to
    ACCRUE_INTERVAL past its last record (it may have lived that long unlogged), never more
    of a gap than that."""
    first = data.draw(hyp.integers(0, len(runs) - 1), label="run submitting the job")
    fraction = data.draw(hyp.integers(0, 100), label="when in that run (%)")
    starts, now = [], 0
    for gap, length, _, _ in runs:
        starts.append(now + gap)
        now += gap + length
    starts.append(now + 1)  # the next process's
    state = initial_state()
    inside = expected = 0.0
    crashes = 0
    for i, (_, length, crashed, actors) in enumerate(runs):
        start = starts[i]
        end = start + length
        if actors:
            apply(state, rt.ActorStarted("root/machines", 1, float(start)))
        apply(state, started(f"r{i}", float(start)))
        if i == first:
            at = start + length * fraction // 100
            apply(state, submitted(float(at)))
        if i >= first:
            counted = min(end + TAIL, starts[i + 1]) if crashed else end
            expected += counted - max(start, at)
            inside += end - max(start, at)
            crashes += crashed
        apply(state, last_event(float(end)) if crashed else ev.SystemStopped(reason="x", at=end))
    apply(state, rt.ActorStarted("root/machines", 1, float(starts[-1])))
    apply(state, started("next", float(starts[-1])))
    job = state.jobs["j1"]
    assert job.time_used == expected
    assert inside <= job.time_used <= inside + crashes * TAIL
    deadline = decide.job_deadline(state, "j1", total_timeout=TOTAL)
    assert deadline == starts[-1] + TOTAL - expected


def test_a_run_stopped_at_its_start_counts_nothing() -> None:
    """A run that stopped at once (its SystemStopped at its start)."""
    state = fold(
        submitted(0.0),
        started("r1", 50.0),
        ev.SystemStopped(reason="x", at=50.0),
        started("r2", 600.0),
    )
    assert state.jobs["j1"].time_used == 0.0
    assert decide.job_deadline(state, "j1", total_timeout=TOTAL) == 600.0 + TOTAL


def test_a_run_crashed_after_its_start_counts_what_it_may_have_lived_unlogged() -> None:
    """A run that crashed with no record after its start: it may have run ACCRUE_INTERVAL
    (a long node logs nothing; a crash loop faster than its records was counted as nothing)."""
    state = fold(submitted(0.0), started("r1", 50.0), started("r2", 600.0))
    assert state.jobs["j1"].time_used == TAIL


def test_a_crash_loop_faster_than_its_records_counts_each_run() -> None:
    """Eight runs killed 7 s after their start, each logging only its start: each counts its
    7 s (up to the next start), not nothing (QA: a 30 s total_timeout let a job run 74 s)."""
    events: list[Any] = [started("r0", 0.0), submitted(0.0)]
    events += [started(f"r{i}", 7.0 * i) for i in range(1, 9)]
    state = fold(*events)
    assert state.jobs["j1"].time_used == 7.0 * 8


def attempt_started(at: float, attempt: int = 1) -> ev.JobStarted:
    return ev.JobStarted(job_id="j1", attempt=attempt, server_id="s1", at=at)


def test_a_running_attempt_keeps_the_time_it_used_in_a_crashed_run() -> None:
    """Its attempt started at 250 and the run crashed at 1000: 750 s of attempt_timeout
    are used (the job's time_used counts from its submission: 900 s)."""
    state = fold(
        started("r1", 0.0),
        submitted(100.0),
        ev.JobQueued(job_id="j1", at=100.0),
        attempt_started(250.0),
        last_event(1000.0),
        started("r2", 90_000.0),
    )
    job = state.jobs["j1"]
    assert (job.attempt_time_used, job.time_used) == (750.0 + TAIL, 900.0 + TAIL)


def test_a_new_attempt_starts_with_its_whole_attempt_timeout() -> None:
    """An attempt's time from earlier runs goes with it: the next attempt has none used."""
    state = fold(
        started("r1", 0.0),
        submitted(100.0),
        ev.JobQueued(job_id="j1", at=100.0),
        attempt_started(250.0),
        last_event(1000.0),
        started("r2", 90_000.0),
        ev.JobQueued(job_id="j1", reason="resumed", at=90_001.0),
        attempt_started(90_010.0, attempt=2),
    )
    assert state.jobs["j1"].attempt_time_used == 0.0
