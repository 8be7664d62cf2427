"""JobIndex (active jobs and queue positions followed event by event) agrees with a scan of
every job, whatever the order of status changes."""

from __future__ import annotations

import functools
from typing import Any

import attrs
import trio
from hypothesis import given
from hypothesis import strategies as hs

import eventlog
from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.service.jobindex import WAITING, JobIndex, follow_jobs, take_ready

changes = hs.lists(
    hs.tuples(
        hs.integers(0, 7),  # which job
        hs.sampled_from(st.JOB_STATUSES),
        hs.integers(-1, 1),  # priority
        hs.sampled_from([1.0, 2.0, 3.0]),  # submitted_at (ties on purpose: not the order)
    ),
    max_size=60,
)


@given(changes)
def test_index_matches_a_full_scan(steps: list[tuple[int, str, int, float]]) -> None:
    """After every change: active = the non-terminal jobs; waiting order and each waiting
    job's position = the sort of every waiting job by the pool's serving order
    (``state.queue_key``: priority desc, submission order, whatever its clock time);
    the counts by status = a count of every job's status (an update repeated included)."""
    jobs: dict[str, st.Job] = {}
    index = JobIndex()
    for n, status, priority, at in steps:
        job_id = f"job-{n}"
        job = jobs.get(job_id) or st.Job(
            job_id, "wf", priority=priority, submitted_at=at, order=(7 - n) * 10
        )
        jobs[job_id] = attrs.evolve(job, status=status)
        index.update(jobs[job_id])
        if n % 2:
            index.update(jobs[job_id])  # updating again changes nothing
        expected = sorted(
            (j for j in jobs.values() if j.status in WAITING),
            key=st.queue_key,
        )
        assert index.waiting() == [j.job_id for j in expected]
        assert all(index.position(j) == i for i, j in enumerate(expected))
        assert index.active == {
            j.job_id for j in jobs.values() if j.status not in st.TERMINAL_STATUSES
        }
        assert index.counts == {
            status: sum(j.status == status for j in jobs.values()) for status in st.JOB_STATUSES
        }


def test_index_built_from_existing_jobs() -> None:
    """A JobIndex over the jobs of a replayed state starts with them indexed (the waiting
    ones in submission order, whatever their clock times say)."""
    jobs = [
        st.Job("a", "wf", status=st.QUEUED, submitted_at=2.0, order=3),
        st.Job("b", "wf", status=st.QUEUED, submitted_at=3.0, order=1),
        st.Job("c", "wf", status=st.SUCCEEDED, submitted_at=0.5, order=2),
        st.Job("d", "wf", status=st.RUNNING, submitted_at=0.1, order=0),
    ]
    index = JobIndex(jobs)
    assert index.waiting() == ["b", "a"]
    assert index.active == {"a", "b", "d"}


async def test_take_ready_takes_what_is_buffered_without_waiting() -> None:
    """take_ready answers every buffered item in order, then [] (never waits, even once the
    channel is closed)."""
    send, receive = trio.open_memory_channel[int](10)
    for n in range(3):
        send.send_nowait(n)
    assert take_ready(receive) == [0, 1, 2]
    assert take_ready(receive) == []
    send.send_nowait(3)
    send.close()
    assert take_ready(receive) == [3]
    assert take_ready(receive) == []


async def test_the_index_follows_each_commit_as_it_is_applied(tmp_path: Any) -> None:
    """follow_jobs is a journal listener: a job is indexed (and its end reported) by the
    time its append returns, and the following task takes no step per commit."""
    ended: list[str] = []
    steps: list[int] = []

    class Steps(trio.abc.Instrument):
        def before_task_step(self, task: trio.lowlevel.Task) -> None:
            if task.name.endswith("follow_jobs"):
                steps.append(1)

    with trio.fail_after(10):
        async with (
            eventlog.open_journal(
                tmp_path / "log", Event, apply=apply, initial=initial_state(), sync="none"
            ) as journal,
            trio.open_nursery() as nursery,
        ):
            index = JobIndex()
            await nursery.start(functools.partial(follow_jobs, journal, index, on_end=ended.append))
            trio.lowlevel.add_instrument(instrument := Steps())
            await journal.append(
                ev.WorkflowRegistered(sha256="w" * 64, name="w", graph_json="{}", at=1.0)
            )
            await journal.append(
                decide.submit_job(journal.state, job_id="j1", workflow_sha256="w" * 64, at=1.0)
            )
            assert index.active == {"j1"}
            await journal.append(ev.JobCancelled(job_id="j1", reason="test", at=2.0))
            assert index.active == set()
            assert ended == ["j1"]
            trio.lowlevel.remove_instrument(instrument)
            nursery.cancel_scope.cancel()
    assert steps == []
