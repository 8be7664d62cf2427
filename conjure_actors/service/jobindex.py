"""The jobs a request asks about by status, kept up to date event by event.

``max_queue`` needs how many jobs are queued or running, and every queued job's view its
queue position; scanning (and sorting) every job of the state for each request made a
submission O(jobs). :class:`JobIndex` keeps the active job ids and the waiting jobs in
serving order (the pool's, ``state.queue_key``: priority first, then submission order),
updated from each job event: a change costs O(log n) to find (plus a C-level list shift), a
position is one binary search. It also counts the jobs by status (those the state retains: an
expired job leaves it), so ``GET /metrics`` reads them instead of scanning every job of the
state twice per scrape (0.3 ms at 2,400 jobs, polled every 20 ms by ``bench/serve.py``).
``GET /api/v2/jobs?status=queued,running`` lists the active jobs and those that succeeded
lately (their outputs may still be becoming assets: the API says ``running``) in the log's
order, from here, without a walk over every job of the state.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

import trio

from conjure_actors.domain import state as st
from conjure_actors.domain.service_events import ApiJobExpired, served_status

__all__ = ["JobIndex", "ServingKey", "follow_jobs", "serving_key", "take_ready"]

WAITING: frozenset[str] = frozenset({st.PENDING, st.QUEUED})

ServingKey = tuple[int, int, str]
_Key = ServingKey
_T = TypeVar("_T")


def take_ready(channel: trio.MemoryReceiveChannel[_T]) -> list[_T]:
    """What ``channel`` holds already, taken without waiting nor a checkpoint.

    A journal subscriber gets each record of a commit as its own message, and each
    ``await receive()`` is a trip through trio's scheduler, behind every other runnable
    task; a subscriber that handles the first record of a wake-up and then these handles a
    whole commit in one scheduler step instead of one per record (~18 records per job)."""
    ready: list[_T] = []
    while True:
        try:
            ready.append(channel.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel):
            return ready


ENDED_HORIZON: float = 600.0
"""Seconds a succeeded job stays in :meth:`JobIndex.succeeded_since` (longer than a job may
read ``running`` after it succeeded while its outputs become assets)."""


def serving_key(job: st.Job) -> ServingKey:
    """``job``'s place in the queue's order: the pool's (``state.queue_key``: priority first,
    then submission order), the job id last (a sort key of its own)."""
    neg_priority, order = st.queue_key(job)
    return (neg_priority, order, job.job_id)


_key = serving_key


class JobIndex:
    """Active job ids and waiting jobs in serving order (see the module docstring)."""

    def __init__(self, jobs: Iterable[st.Job] = ()) -> None:
        self.active: set[str] = set()
        self._waiting: list[_Key] = []  # sorted
        self._keys: dict[str, _Key] = {}
        self._status: dict[str, str] = {}
        self.counts: dict[str, int] = dict.fromkeys(st.JOB_STATUSES, 0)
        """Jobs by status (every job the index was given, as last given)."""
        self.moves = 0
        """How many times the waiting jobs changed (one joined, left or moved): a queued
        job's position can have changed only when this did (an event stream compares it
        on each commit before it looks up its position)."""
        self._order: dict[str, int] = {}  # job id -> its place in the log (first update)
        self._seen = 0  # jobs ever indexed
        self._succeeded: list[tuple[float, str]] = []  # (finished_at, id), sorted; recent
        for job in jobs:
            self.update(job)

    def update(self, job: st.Job, counted: str | None = None) -> None:
        """Take ``job``'s current status into account (idempotent); ``counted``: the status
        it is counted under, when not its own (``service_events.served_status``)."""
        job_id = job.job_id
        status = job.status
        counted = status if counted is None else counted
        old_status = self._status.get(job_id)
        if counted != old_status:
            counts = self.counts
            if old_status is not None:
                counts[old_status] -= 1
            else:
                self._order[job_id] = self._seen  # (not len(_order): forget() shrinks it)
                self._seen += 1
            counts[counted] = counts.get(counted, 0) + 1
            self._status[job_id] = counted
            if status == st.SUCCEEDED and job.finished_at is not None:
                self._ended(job.finished_at, job_id)
        if status in st.TERMINAL_STATUSES:
            self.active.discard(job_id)
        else:
            self.active.add(job_id)
        old = self._keys.get(job_id)
        if status in WAITING:
            key = _key(job)
            if key == old:
                return
            if old is not None:
                self._remove(old)
            bisect.insort(self._waiting, key)
            self._keys[job_id] = key
            self.moves += 1
        elif old is not None:
            self._remove(old)
            del self._keys[job_id]
            self.moves += 1

    def forget(self, job_id: str) -> None:
        """Drop ``job_id`` (it expired: it left the state). Its count goes with it: the
        state's ``expired_tally`` counts it from then on (``/metrics`` adds the two)."""
        counted = self._status.pop(job_id, None)
        if counted is None:
            return
        self.counts[counted] -= 1
        self._order.pop(job_id, None)
        self.active.discard(job_id)
        old = self._keys.pop(job_id, None)
        if old is not None:
            self._remove(old)
            self.moves += 1
        if any(jid == job_id for _, jid in self._succeeded):  # (lately: ENDED_HORIZON)
            self._succeeded = [e for e in self._succeeded if e[1] != job_id]

    def _remove(self, key: _Key) -> None:
        at = bisect.bisect_left(self._waiting, key)
        if at < len(self._waiting) and self._waiting[at] == key:
            del self._waiting[at]

    def _ended(self, at: float, job_id: str) -> None:
        ended = self._succeeded
        bisect.insort(ended, (at, job_id))
        del ended[: bisect.bisect_left(ended, (ended[-1][0] - ENDED_HORIZON,))]

    def order(self, job_id: str) -> int | None:
        """``job_id``'s place in the log's order of jobs (None: not indexed)."""
        return self._order.get(job_id)

    def succeeded_since(self, at: float) -> list[str]:
        """The jobs that succeeded at or after ``at`` (at most :data:`ENDED_HORIZON` ago)."""
        ended = self._succeeded
        return [job_id for _, job_id in ended[bisect.bisect_left(ended, (at,)) :]]

    def position(self, job: st.Job) -> int:
        """How many waiting jobs go before ``job``."""
        return bisect.bisect_left(self._waiting, _key(job))

    def waiting(self) -> list[str]:
        """The waiting job ids in serving order."""
        return [key[2] for key in self._waiting]


async def follow_jobs(
    journal: Any,
    index: JobIndex,
    *,
    on_end: Callable[[str], None] | None = None,
    task_status: Any,
) -> None:
    """Keep ``index`` up to date with ``journal.state`` (a trio task; ``nursery.start`` it:
    it installs a journal listener, then indexes every job already there, then each commit's
    job events are indexed as the commit applies them). ``on_end(job_id)``: called on each
    event that leaves a job terminal. A listener, not a subscription: no task step per
    commit (a subscriber was woken by each of a job's ~5 commits, in the same scheduler
    pass as the submission's answer)."""

    def on_records(records: list[Any]) -> None:
        state = journal.state
        jobs = state.jobs
        for record in records:
            job_id = getattr(record.event, "job_id", None)
            if job_id is not None:
                job = jobs.get(job_id)
                if job is not None:
                    index.update(job, served_status(state, job))
                    if on_end is not None and job.status in st.TERMINAL_STATUSES:
                        on_end(job_id)
                elif isinstance(record.event, ApiJobExpired):
                    index.forget(job_id)  # it left the state

    with journal.listen(on_records) as listener:
        state = journal.state
        for job in state.jobs.values():
            index.update(job, served_status(state, job))
        task_status.started()
        await listener.wait_raised()  # a failure of on_records fails this task (found by review)
