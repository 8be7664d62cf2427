"""JobIndex.forget (a job expired and left the state): the index then agrees with a scan of
the jobs left, and holds nothing of the forgotten ones (QA11 finding 8: it kept every job
the service ever ran)."""

from __future__ import annotations

import attrs
from hypothesis import given
from hypothesis import strategies as hs

from conjure_actors.domain import state as st
from conjure_actors.service.jobindex import WAITING, JobIndex

steps = hs.lists(
    hs.tuples(
        hs.integers(0, 5),  # which job
        hs.sampled_from([*st.JOB_STATUSES, "forget"]),
        hs.sampled_from([1.0, 2.0]),  # submitted_at (ties on purpose)
    ),
    max_size=60,
)


@given(steps)
def test_a_forgotten_job_leaves_the_index(changes: list[tuple[int, str, float]]) -> None:
    """After every change: counts, active and waiting jobs are those of the jobs left; a
    forgotten job has no place in the log's order, and every job indexed has its own."""
    jobs: dict[str, st.Job] = {}
    index = JobIndex()
    submitted = 0  # the fold's jobs_submitted: each new job's order
    for n, status, at in changes:
        job_id = f"job-{n}"
        if status == "forget":
            jobs.pop(job_id, None)
            index.forget(job_id)
            assert index.order(job_id) is None
        else:
            job = jobs.get(job_id)
            if job is None:
                job = st.Job(job_id, "wf", submitted_at=at, order=submitted)
                submitted += 1
            jobs[job_id] = attrs.evolve(job, status=status, finished_at=at)
            index.update(jobs[job_id])
        waiting = sorted(
            (j for j in jobs.values() if j.status in WAITING),
            key=st.queue_key,
        )
        assert index.waiting() == [j.job_id for j in waiting]
        assert index.active == {
            j.job_id for j in jobs.values() if j.status not in st.TERMINAL_STATUSES
        }
        assert index.counts == {
            s: sum(j.status == s for j in jobs.values()) for s in st.JOB_STATUSES
        }
        assert set(index.succeeded_since(0.0)) <= set(jobs)
        orders = [index.order(j) for j in jobs]
        assert None not in orders
        assert len(set(orders)) == len(orders), "each job its own place"
