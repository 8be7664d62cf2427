"""bench/serve.py's verdict and its clients' HTTP reading: a row is decided only when its
paired rounds agree (a sign test), and a response is read whole off a kept-alive stream."""

from __future__ import annotations

import functools
import math
import sys
from pathlib import Path
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as hs

# Last on the path: bench/eventlog.py must not shadow the eventlog package for later tests.
sys.path.append(str(Path(__file__).resolve().parent.parent.parent / "bench"))

import serve as bench  # bench/ is not a package: its path is added above

ratios = hs.lists(hs.floats(min_value=0.2, max_value=5.0), min_size=1, max_size=12)


def test_needed_is_the_smallest_count_a_one_sided_sign_test_accepts() -> None:
    """Fewer than 5 rounds decide nothing; from 5, the fewest agreeing rounds at 5%."""
    for n in range(1, 13):
        k = bench.needed(n)
        tail = [sum(math.comb(n, i) for i in range(j, n + 1)) / 2**n for j in range(n + 2)]
        if n < 5:
            assert k is None
        else:
            assert k is not None
            assert tail[k] <= bench.ALPHA < tail[k - 1]


def test_rounds_that_all_favour_serve_say_yes() -> None:
    """Every round faster: yes (and every round slower: no)."""
    assert bench.decide([1.2, 1.4, 1.1, 1.3, 1.5, 1.2, 1.1, 1.6], higher_is_better=True) == "yes"
    assert bench.decide([0.8, 0.7, 0.9, 0.8, 0.6, 0.9, 0.7, 0.8], higher_is_better=True) == "no"


def test_one_disturbed_round_of_eight_does_not_flip_a_verdict() -> None:
    """One round far on the wrong side (other work on the box) still leaves 7 of 8."""
    assert bench.decide([1.2, 1.4, 1.1, 1.3, 1.5, 1.2, 1.1, 0.4], higher_is_better=True) == "yes"


def test_rounds_that_disagree_decide_nothing() -> None:
    """Half the rounds each way: not decided, whatever the median says."""
    mixed = [1.5, 0.7, 1.4, 0.8, 1.6, 0.6, 1.3, 0.9]
    assert bench.decide(mixed, higher_is_better=True) == "not decided"


def test_a_latency_ratio_is_better_below_one() -> None:
    """For p50, lower is better: ratios under 1 in every round say yes."""
    assert bench.decide([0.5, 0.6, 0.7, 0.5, 0.6, 0.4, 0.5, 0.6], higher_is_better=False) == "yes"


def test_too_few_rounds_decide_nothing() -> None:
    """Four rounds, all far ahead: not decided (a sign test needs 5)."""
    assert bench.decide([3.0, 3.0, 3.0, 3.0], higher_is_better=True) == "not decided"


@given(ratios, hs.floats(min_value=1.0, max_value=3.0))
def test_serve_better_in_every_round_never_loses_a_yes(rounds: list[float], by: float) -> None:
    """Monotone: a yes stays yes when serve does better in every round; a no stays no when
    it does worse in every round."""
    verdict = bench.decide(rounds, higher_is_better=True)
    if verdict == "yes":
        assert bench.decide([r * by for r in rounds], higher_is_better=True) == "yes"
    if verdict == "no":
        assert bench.decide([r / by for r in rounds], higher_is_better=True) == "no"


@given(ratios)
def test_yes_and_no_stay_apart_when_the_sides_swap(rounds: list[float]) -> None:
    """Swapping serve and the proxy (inverse ratios) never turns a no into a no."""
    if bench.decide(rounds, higher_is_better=True) == "no":
        assert bench.decide([1 / r for r in rounds], higher_is_better=True) != "no"


def test_the_overall_verdict_needs_every_row() -> None:
    """PASS only when every row is yes; one no is FAIL; else NOT DECIDED."""
    assert bench.overall(["yes", "yes", "yes"]) == "PASS"
    assert bench.overall(["yes", "no", "not decided"]) == "FAIL"
    assert bench.overall(["yes", "not decided", "yes"]) == "NOT DECIDED"


async def test_a_response_is_read_whole_across_chunks_and_pipelined() -> None:
    """Head and body split over sends, a second response right behind: each read returns
    its status and leaves the next response's bytes in the buffer."""
    client, server = trio.testing.memory_stream_pair()
    first = b'HTTP/1.1 201 Created\r\ncontent-length: 7\r\n\r\n{"a":1}'
    second = b"HTTP/1.1 429 Too Many\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
    with trio.fail_after(5):
        await server.send_all(first[:10])
        await server.send_all(first[10:30])
        await server.send_all(first[30:] + second)
        status, close, rest = await bench.read_response(client, bytearray())  # type: ignore[arg-type]
        assert (status, close) == (201, False)
        status, close, rest = await bench.read_response(client, rest)  # type: ignore[arg-type]
        assert (status, close, bytes(rest)) == (429, True, b"")


def _row(jobs_per_s: float, p50_ms: float, ran_per_s: float) -> dict[str, Any]:
    spread = (1.0, 1.02, 0.98, 1.01, 0.99, 1.0, 1.03, 0.97)
    return {
        "rounds_jobs_per_s": [jobs_per_s * f for f in spread],
        "rounds_p50_ms": [p50_ms] * 8,
        "rounds_ran_per_s": [ran_per_s] * 8,
    }


def test_the_row_verdict_is_the_submissions_and_shows_the_run_rate_beside() -> None:
    """Issue 13's goal is the submissions (jobs/s, p50); the rate at which the accepted
    jobs ran is printed beside, not compared: the proxy does none of serve's work for a job
    after its 201 (that the jobs were not deferred is ``core_busy``'s check)."""
    verdict, text = bench.row_verdict(_row(550.0, 1.8, 100.0), _row(500.0, 2.0, 400.0))
    assert verdict == "yes"
    assert "ran/s x 0.25-0.25 (not compared" in text


def test_slower_submissions_are_not_as_fast() -> None:
    verdict, _ = bench.row_verdict(_row(400.0, 2.5, 100.0), _row(500.0, 2.0, 100.0))
    assert verdict == "no"


def test_a_serve_that_idles_while_its_accepted_jobs_wait_is_not_busy() -> None:
    """A fast 201 bought by deferring the jobs and then idling: 100 jobs/s ran at 4 ms of
    CPU each is a core busy 0.4 of the span, under BUSY (found by review: the gate puts
    requests first)."""
    assert bench.core_busy({"ran_per_s": 100.0, "cpu_ms": (1.0, 4.0, 3.0)}) < bench.BUSY
    assert bench.core_busy({"ran_per_s": 120.0, "cpu_ms": (1.0, 7.5, 3.0)}) >= bench.BUSY


async def test_a_backend_that_never_answers_ends_the_round_at_its_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def silent(stream: trio.SocketStream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, silent, 0, host="127.0.0.1")
        )
        port = listeners[0].socket.getsockname()[1]
        with trio.fail_after(600):
            await bench.submit_load(f"http://127.0.0.1:{port}", 1, 1, 1.0)
        nursery.cancel_scope.cancel()


def test_serve_finished_jobs_are_counted_from_its_log_as_it_grows(tmp_path: Path) -> None:
    """The completion check reads serve's log from the bench process (not its /metrics,
    which cost serve's core): only terminal events count, and later appends are seen."""
    import eventlog
    from conjure_actors.domain.events import (
        Event,
        JobCancelled,
        JobFailed,
        JobQueued,
        JobStarted,
        JobSucceeded,
    )

    log = tmp_path / "serve.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append(JobQueued(job_id="a", at=1.0))
        writer.append(JobStarted(job_id="a", attempt=1, server_id="s", at=1.0))
        writer.append(JobSucceeded(job_id="a", at=2.0))
        writer.append(JobFailed(job_id="b", error_type="x", message="m", at=2.0))
        writer.flush()
        finished = bench.Finished(log)
        assert finished.now(settle=0.05) == 2
        writer.append(JobCancelled(job_id="c", reason="user", at=3.0))
        writer.flush()
        finished.until(3, timeout=60.0)
    assert finished.count == 3


def test_a_round_in_which_serve_accepted_no_job_has_run_at_once(tmp_path: Path) -> None:
    """Every submission of a round refused (or none answered in the budget): nothing is
    waited for (it used to wait for one more terminal event, then abort the bench)."""
    import eventlog
    from conjure_actors.domain.events import Event, JobSucceeded

    log = tmp_path / "serve.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append(JobSucceeded(job_id="a", at=2.0))
        writer.flush()
        finished = bench.Finished(log)
        before = finished.now(settle=0.05)
        finished.until(before + 0, timeout=5.0)  # raises if it waits out its timeout
    assert before == 1


def test_a_job_that_ran_straight_through_gives_one_cycle_of_every_step(tmp_path: Path) -> None:
    """The cycle line reads each job's steps from serve's log: a job released with every
    step logged is one cycle, its steps in order; a job released before it ran (no prompt)
    is none."""
    import eventlog
    from conjure_actors.domain import events as e

    def steps(job: str) -> list[Any]:
        return [
            e.JobSubmitted(job_id=job, workflow_sha256="w", at=1.0),
            e.MachineLeased(server_id="s", job_id=job, at=1.0),
            e.PromptSubmitted(job_id=job, prompt_id="p", number=1, at=1.0),
            e.ExecutionStarted(job_id=job, prompt_id="p", at=1.0),
            e.ExecutionSucceeded(job_id=job, prompt_id="p", at=1.0),
            e.OutputSaved(
                job_id=job,
                node_id="9",
                filename="f",
                path="p",
                size=1,
                sha256="h",
                kind="image",
                at=1.0,
            ),
            e.MachineReleased(server_id="s", job_id=job, at=1.0),
        ]

    log = tmp_path / "serve.log"
    with eventlog.open_writer(log, e.Event, sync="none") as writer:
        for event in steps("a"):
            writer.append(event)
        writer.append(e.JobSubmitted(job_id="b", workflow_sha256="w", at=1.0))
        writer.append(e.MachineLeased(server_id="s", job_id="b", at=1.0))
        writer.append(e.MachineReleased(server_id="s", job_id="b", at=1.0))
        writer.flush()
        finished = bench.Finished(log)
        finished.now(settle=0.05)
    [cycle] = finished.cycles
    stamps = [cycle[step] for step in bench.CYCLE_STEPS]
    assert stamps == sorted(stamps)
    assert finished.stamps == {}


def test_the_cycle_line_gives_the_median_of_each_step_and_of_the_slot_hold() -> None:
    def cycle(*gaps: float) -> dict[type, float]:
        t, stamps = 0.0, {}
        for step, gap in zip(bench.CYCLE_STEPS, (0.0, *gaps), strict=True):
            t += gap
            stamps[step] = t
        return stamps

    line = bench.cycle_line(
        "serve",
        [cycle(1, 0.002, 0.010, 0.020, 0.030, 0.004), cycle(3, 0.004, 0.030, 0.020, 0.050, 0.006)],
    )
    assert "queued 2000.0 | submit 3.0 | comfy queue 20.0 | run 20.0 | outputs 40.0" in line
    assert "release 5.0 | slot held 88.0 (2 jobs)" in line
    assert "no job ran" in bench.cycle_line("serve", [])
