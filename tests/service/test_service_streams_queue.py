"""``QueueWatch``: a many-jobs stream looks up the queue positions of only the followed
queued jobs behind the jobs that joined or left the queue, and misses none that moved."""

from __future__ import annotations

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as hs

from conjure_actors.domain import state as st
from conjure_actors.service.jobindex import JobIndex
from conjure_actors.service.streams import QueueWatch, serving_key

QUEUED_API = frozenset({st.PENDING, st.QUEUED, st.INTERRUPTED})
"""The statuses the API says ``queued``: the stream keeps those followed jobs in the watch."""

batches = hs.lists(
    hs.lists(
        hs.tuples(
            hs.integers(0, 7),  # which job
            hs.sampled_from(st.JOB_STATUSES),
            hs.integers(-1, 1),  # priority, set when the job is first seen
            hs.sampled_from([1.0, 2.0, 3.0]),  # submitted_at (ties on purpose)
        ),
        min_size=1,
        max_size=4,
    ),
    max_size=25,
)


@given(
    start=hs.lists(hs.integers(0, 7), max_size=8),
    followed=hs.frozensets(hs.integers(0, 7)),
    steps=batches,
)
@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_every_followed_queued_job_whose_position_moved_is_returned(
    start: list[int], followed: frozenset[int], steps: list[list[tuple[int, str, int, float]]]
) -> None:
    """Whatever jobs join, leave or pass through the queue in a batch (a commit), every
    followed queued job whose position changed and that the batch does not name is in
    ``moved`` (one the batch names is looked at whole)."""
    jobs: dict[str, st.Job] = {}
    for n in start:
        job_id = f"job-{n}"
        jobs[job_id] = st.Job(job_id, "wf", status=st.QUEUED, submitted_at=float(n % 3))
    index = JobIndex(jobs.values())
    watch = QueueWatch(index.waiting())
    watched: set[str] = set()

    def sync_followed() -> None:
        for job_id, job in jobs.items():
            if int(job_id[4:]) not in followed:
                continue
            queued = job.status in QUEUED_API
            if queued and job_id not in watched:
                watch.follow(serving_key(job))
                watched.add(job_id)
            elif not queued and job_id in watched:
                watch.forget(serving_key(job))
                watched.discard(job_id)

    sync_followed()
    for batch in steps:
        before = {j: index.position(jobs[j]) for j in watched}
        touched: dict[str, None] = {}
        for n, status, priority, at in batch:
            job_id = f"job-{n}"
            job = jobs.get(job_id) or st.Job(job_id, "wf", priority=priority, submitted_at=at)
            jobs[job_id] = attrs.evolve(job, status=status)
            index.update(jobs[job_id])
            touched[job_id] = None
        moved = watch.moved(jobs, touched)
        assert len(moved) == len(set(moved))
        assert set(moved) <= watched
        missed = {j for j in watched if j not in touched and index.position(jobs[j]) != before[j]}
        assert missed <= set(moved), (missed, moved)
        sync_followed()


def test_a_job_joining_at_the_end_of_the_queue_moves_no_one() -> None:
    """A submission joins behind every followed queued job: no position is looked up."""
    jobs = {f"j{i}": st.Job(f"j{i}", "wf", status=st.QUEUED, submitted_at=i) for i in range(3)}
    index = JobIndex(jobs.values())
    watch = QueueWatch(index.waiting())
    for job in jobs.values():
        watch.follow(serving_key(job))
    jobs["new"] = st.Job("new", "wf", status=st.QUEUED, submitted_at=10)
    index.update(jobs["new"])
    assert watch.moved(jobs, ["new"]) == []
    jobs["j0"] = attrs.evolve(jobs["j0"], status=st.RUNNING)
    index.update(jobs["j0"])
    assert watch.moved(jobs, ["j0"]) == ["j1", "j2"]
