"""The harness itself: crash and resume, deterministic time, lost machines, saved logs, and
invariants that do catch a broken run."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

import eventlog
from conjure_actors.actors.example import example_sketch_png
from conjure_actors.cli import main as cli_main
from conjure_actors.domain.events import Event
from conjure_actors.sim import CloudFaults, ComfyFaults
from conjure_actors.testing import (
    Harness,
    HarnessSettings,
    InvariantViolation,
    JobRequest,
    check_all,
    check_quiet,
    conjure_workflow,
    open_harness,
    run_harness,
)
from conjure_actors.testing.harness import HarnessError, _Severable


def _conjure_job(prompt: str = "a fox", seed: int = 1) -> JobRequest:
    return JobRequest(
        conjure_workflow(), name="conjure", image=example_sketch_png(), prompt=prompt, seed=seed
    )


async def _wait_for(h: Harness, predicate: Any, limit: float = 3600.0) -> None:
    """Advance simulated time in small steps until ``predicate()``."""
    with trio.fail_after(2 * limit):  # simulated seconds (the harness jumps the clock)
        waited = 0.0
        while not predicate():
            assert waited < limit, "condition not reached in simulated time"
            await h.advance(1.0)
            waited += 1.0


@pytest.mark.slow
async def test_crash_mid_prompt_resumes_and_finishes(mock_clock: trio.testing.MockClock) -> None:
    """A crash while the prompt runs loses nothing acknowledged; the resumed runtime
    follows the prompt (no second run) and the job succeeds with an exact ledger."""
    async with open_harness(HarnessSettings(seed=11)) as h:
        job = await h.submit(_conjure_job())
        assert job is not None
        await _wait_for(h, lambda: h.state.jobs[job].execution == "started")
        acked = len(h.acked)
        lost = await h.restart()
        assert lost == 0
        assert h.log.last_seq >= acked
        check_all(h)
        assert await h.run_until_quiet()
        check_all(h)
        check_quiet(h)
        assert h.state.jobs[job].status == "succeeded"
        assert h.state.jobs[job].attempt == 1
        assert h.crashes == 1


@pytest.mark.slow
async def test_a_crash_with_a_job_queued_behind_a_prompt_keeps_one_prompt_per_slot(
    mock_clock: trio.testing.MockClock,
) -> None:
    """One machine of one slot, a crash while job A's prompt runs and job B waits: the
    resumed runtime re-attaches A and gives B the machine only after A's prompt ended
    (check_slots counts the prompts a machine holds, leased or not: a restart's adoption
    drops the leases, and B's prompt was once queued behind A's on the same machine)."""
    async with open_harness(HarnessSettings(seed=5, max_machines=1)) as h:
        first = await h.submit(_conjure_job(seed=1))
        second = await h.submit(_conjure_job(seed=2))
        assert first is not None
        assert second is not None
        await _wait_for(h, lambda: h.state.jobs[first].execution == "started")
        assert h.state.jobs[second].status == "queued"
        await h.restart()
        assert await h.run_until_quiet()
        check_all(h)
        check_quiet(h)
        assert {h.state.jobs[j].status for j in (first, second)} == {"succeeded"}
        assert h.state.jobs[first].attempt == 1


async def test_crash_cuts_the_dead_runtimes_network(mock_clock: trio.testing.MockClock) -> None:
    """Once crashed, an incarnation's transport refuses every request."""
    inner = httpx.MockTransport(lambda request: httpx.Response(200))
    severable = _Severable(inner)
    async with httpx.AsyncClient(transport=severable) as client:
        assert (await client.get("http://x.invalid/")).status_code == 200
        severable.cut = True
        with pytest.raises(httpx.ConnectError):
            await client.get("http://x.invalid/")


async def _run_once(
    seed: int, out: Path, faults: CloudFaults | None = None
) -> list[tuple[float, Any]]:
    settings = HarnessSettings(seed=seed, faults=faults or CloudFaults())
    async with open_harness(settings, out_dir=out) as h:
        await h.submit(_conjure_job("one", 1))
        await h.submit(_conjure_job("two", 2))
        await h.advance(75)
        await h.restart()
        await h.run_until_quiet()
        return [(r.ts, r.event) for r in h.log.records()]


def _seeded_run(seed: int, out: Path, faults: CloudFaults | None = None) -> list[tuple[float, Any]]:
    # Trio's scheduler shuffles with its module-level Random; hypothesis seeds it for each
    # example (trio registers it). Outside hypothesis, seed it as hypothesis would.
    trio._core._run._r.seed(seed)
    return trio.run(_run_once, seed, out, faults, clock=trio.testing.MockClock())


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
def test_same_seed_same_log(tmp_path: Path) -> None:
    """Two runs with the same seed write identical logs (events and timestamps)."""
    first = _seeded_run(5, tmp_path / "a")
    shutil.rmtree(tmp_path / "a")
    second = _seeded_run(5, tmp_path / "a")
    assert len(first) > 50
    assert first == second


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
def test_same_seed_same_log_through_comfyui_retries(tmp_path: Path) -> None:
    """The ComfyUI clients' retry and reconnect jitter comes from the run's seed: with 5xx
    answers to retry, one seed still writes one log (else a hypothesis failure does not
    replay). Found by review: the jitter came from an unseeded ``random.Random()``."""
    faults = CloudFaults(comfyui=ComfyFaults(http_5xx_rate=0.3))
    first = _seeded_run(5, tmp_path / "a", faults)
    shutil.rmtree(tmp_path / "a")
    second = _seeded_run(5, tmp_path / "a", faults)
    assert first == second


@pytest.mark.slow
async def test_lost_machine_requeues_its_job(mock_clock: trio.testing.MockClock) -> None:
    """A machine that vanishes mid-job is marked lost and its job still succeeds."""
    async with open_harness(HarnessSettings(seed=3)) as h:
        job = await h.submit(_conjure_job())
        assert job is not None
        await _wait_for(h, lambda: h.state.jobs[job].execution == "started")
        server = await h.lose_machine(0)
        assert server is not None
        await _wait_for(h, lambda: h.state.machines[server].lost_reason is not None, limit=120)
        check_all(h)
        assert await h.run_until_quiet()
        check_quiet(h)
        assert h.state.jobs[job].status == "succeeded"
        assert h.state.jobs[job].server_id != server


async def test_tampered_state_breaks_replay_invariant(mock_clock: trio.testing.MockClock) -> None:
    """A live state changed behind the journal's back no longer equals the replay."""
    async with open_harness(HarnessSettings(seed=2)) as h:
        job = await h.submit(_conjure_job())
        assert job is not None
        h.state.jobs[job].priority += 1
        with pytest.raises(InvariantViolation, match="replay"):
            check_all(h)


async def test_missing_acknowledged_record_is_caught(mock_clock: trio.testing.MockClock) -> None:
    """A record acknowledged but absent from the log is reported with its seq."""
    async with open_harness(HarnessSettings(seed=2)) as h:
        await h.submit(_conjure_job())
        ghost = eventlog.Record(h.log.last_seq + 5, 0.0, h.acked[0].event)
        h.acked.append(ghost)
        with pytest.raises(InvariantViolation, match=f"seq {ghost.seq}"):
            check_all(h)


async def test_unknown_billing_machine_is_caught(mock_clock: trio.testing.MockClock) -> None:
    """A machine launched behind the runtime's back is reported as unknown."""
    async with open_harness(HarnessSettings(seed=4)) as h:
        h.cloud.runcomfy._launch(
            b'{"workflow_version_id": "wv-conjure-flux-mesh-1", "server_type": "medium",'
            b' "estimated_duration": 600}'
        )
        with pytest.raises(InvariantViolation, match="does not hold"):
            check_all(h)


async def test_actor_crash_is_caught(
    mock_clock: trio.testing.MockClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An actor that raised is reported even though its supervisor restarted it."""
    from conjure_actors.actors.pool import MachineActor

    real = MachineActor._apply_listing
    calls = 0

    async def apply_listing_that_fails_once(self: MachineActor, servers: list[Any]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("boom")
        await real(self, servers)

    monkeypatch.setattr(MachineActor, "_apply_listing", apply_listing_that_fails_once)
    async with open_harness(HarnessSettings(seed=2)) as h:
        await h.submit(_conjure_job())
        await _wait_for(h, lambda: calls > 1)
        with pytest.raises(InvariantViolation, match=r"actors: .* crashed .*RuntimeError: boom"):
            check_all(h)


async def test_harness_refuses_a_real_clock() -> None:
    """Without MockClock the harness says what it needs."""
    with pytest.raises(HarnessError, match="MockClock"):
        async with open_harness():
            pass


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_saved_log_replays_with_the_cli(tmp_path: Path) -> None:
    """``save_log`` writes an event-log file ``python -m conjure_actors replay`` reads."""
    with run_harness(HarnessSettings(seed=9)) as h:
        h.submit(_conjure_job())
        h.run_until_quiet()
        path = h.save_log(tmp_path / "run.log")
        count = len(h.read(lambda hh: list(hh.log.records())))
    records = list(eventlog.read(path, Event))
    assert len(records) == count
    assert [r.seq for r in records] == list(range(1, count + 1))
    assert cli_main(["replay", str(path)]) == 0


def test_thread_harness_closes_once_and_then_refuses() -> None:
    """Closing twice is fine; a step after close is a clear error."""
    h = run_harness(HarnessSettings(seed=1)).open()
    assert h.job_ids() == []
    h.close()
    h.close()
    with pytest.raises(HarnessError, match="not open"):
        h.advance(1)


async def test_a_launch_in_flight_is_not_quiet(mock_clock: trio.testing.MockClock) -> None:
    """A job cancelled the moment its machine's launch was requested: the POST is on its way
    and nothing is listed yet. quiet() said quiet then (soak: the machine showed up 2 s
    later and was found starting by the check after it); a launch in flight is not quiet,
    and the run ends quiet once that machine is stopped."""
    async with open_harness(HarnessSettings(seed=0, max_machines=1)) as h:
        # RunComfy answers 429 for a while: the POST /servers, sent (a launch is logged only
        # when it can be sent), waits out Retry-After with its intent open.
        h.cloud.runcomfy.inject_rate_limit_burst(3)
        job = await h.submit(_conjure_job())
        assert job is not None
        await h.cancel(job)
        assert h.state.launch_requests, "the launch is answered already: nothing to test"
        assert not h.quiet()
        assert await h.run_until_quiet()
        check_all(h)
        check_quiet(h)
