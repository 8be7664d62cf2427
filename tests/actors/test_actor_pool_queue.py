"""The MachineActor's waiting queue: serving order and bookkeeping without scans."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as hst

from conjure_actors.actors.messages import Reply
from conjure_actors.actors.pool import _Waiter, _WaitQueue
from conjure_actors.domain import state as st


def waiter(
    seq: int, priority: int, version: str | None = "v1", bound: str | None = None, order: int = 0
) -> _Waiter:
    """A waiting lease request (of a job submitted ``order``-th)."""
    return _Waiter(f"job-{seq}", version, priority, seq, Reply(), bound, order=order)


ops = hst.lists(
    hst.tuples(
        hst.sampled_from(["add", "add", "remove", "serve"]), hst.integers(0, 3), hst.integers(0, 9)
    ),
    max_size=60,
)


@given(ops)
def test_queue_serves_in_the_jobs_queue_order(steps: list[tuple[str, int, int]]) -> None:
    """Whatever was added (in any order of arrival), removed or popped and pushed back, the
    queue serves the remaining unbound requests in their jobs' queue order
    (``state.queue_key``: priority, then submission order; arrival last), and counts them."""
    queue = _WaitQueue()
    alive: list[_Waiter] = []
    seq = 0
    for op, k, order in steps:
        if op == "add":
            w = waiter(seq, k, bound="m1" if k == 3 else None, order=order)
            seq += 1
            queue.append(w)
            alive.append(w)
        elif op == "remove" and alive:
            w = alive.pop(k % len(alive))
            queue.remove(w)
        elif op == "serve":
            popped = queue.pop()  # looked at, not served: it keeps its place
            if popped is not None:
                queue.push_back(popped)
    unbound = [w for w in alive if w.only_server is None]
    assert len(queue) == len(alive)
    for w in alive:
        assert w in queue.of_job(w.job_id)
    assert sorted(queue.bound) == sorted(w.seq for w in alive if w.only_server is not None)
    expected = sorted(
        unbound,
        key=lambda w: (
            *st.queue_key(st.Job(w.job_id, "wf", priority=w.priority, order=w.order)),
            w.seq,
        ),
    )
    served = []
    while (w := queue.pop()) is not None:
        queue.remove(w)
        served.append(w)
    assert served == expected
    assert [w.seq for w in queue] == sorted(w.seq for w in alive if w.only_server is not None)


def test_queue_wants_a_machine_only_for_a_compatible_request() -> None:
    """A machine of version v2 has work only while a v2 or any-version request waits."""
    queue = _WaitQueue()
    v1, anyv = waiter(0, 0, "v1"), waiter(1, 0, None)
    queue.append(v1)
    assert queue.wants("v1")
    assert not queue.wants("v2")
    queue.append(anyv)
    assert queue.wants("v2")
    queue.remove(anyv)
    queue.remove(v1)
    assert not queue.wants("v1")


deadline_ops = hst.lists(
    hst.tuples(hst.sampled_from(["add", "add", "remove", "look"]), hst.integers(0, 200)),
    max_size=300,
)


@given(deadline_ops)
def test_the_queue_timer_aims_at_the_earliest_deadline_of_a_waiting_job(
    steps: list[tuple[str, int]],
) -> None:
    """Whatever was queued and withdrawn, the one queue timer's next wake-up is the earliest
    deadline among the jobs still waiting, and the deadline heap stays bounded by them."""
    import heapq
    import math
    from types import SimpleNamespace

    from conjure_actors.actors.pool import MachineActor

    actor = MachineActor.__new__(MachineActor)  # only its queue bookkeeping is exercised
    actor.pool = SimpleNamespace(deadlines=[], waiting=_WaitQueue())  # type: ignore[assignment]
    alive: list[_Waiter] = []
    seq = 0
    for op, k in steps:
        if op == "add":
            w = _Waiter(f"job-{seq}", "v1", 0, seq, Reply(), None, float(k))
            seq += 1
            actor.pool.waiting.append(w)
            heapq.heappush(actor.pool.deadlines, (w.deadline, w.seq))
            alive.append(w)
        elif op == "remove" and alive:
            actor.pool.waiting.remove(alive.pop(k % len(alive)))
        elif op == "look":
            assert actor._next_deadline() == min((w.deadline for w in alive), default=math.inf)
            assert len(actor.pool.deadlines) <= max(64, 2 * len(alive)) + 1
    assert actor._next_deadline() == min((w.deadline for w in alive), default=math.inf)
