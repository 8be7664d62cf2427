"""A workflow version whose ComfyUI never answers (RunComfy says Ready and bills; every
ComfyUI request fails): each machine stopped as unhealthy before it served a job is a failed
launch of that version, said once; after ``max_launch_attempts`` in a row the version's
waiting jobs fail with one line and it is held (no launch) for ``UNANSWERED_HOLD``; other
versions launch on; a machine of it that answers ends its series (QA H10: ~47 paid machines
for one job, in silence, until its total_timeout)."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from test_actor_pool import Rig, _HealthyComfy, pool_rig

from conjure_actors.actors.messages import LeaseFailedError
from conjure_actors.clients.errors import ComfyUIError
from conjure_actors.domain import machines_policy as policy

DEAD: set[str] = set()
"""Workflow versions whose ComfyUI answers 503 (see _PerVersionComfy)."""


class _DeadComfy(_HealthyComfy):
    """A ComfyUI that answers every request 503 (its start failed behind a proxy)."""

    async def system_stats(self) -> dict[str, Any]:
        raise ComfyUIError("server http://secret-host.invalid:8188 answered 503", status=503)


async def _fails(rig: Rig, job: str, version: str = "v1") -> LeaseFailedError:
    reply = await rig.ask_lease(job, version)
    with trio.fail_after(7200), pytest.raises(LeaseFailedError) as info:
        await reply.wait()
    return info.value


async def test_dead_comfyui_fails_the_job_after_max_launch_attempts_machines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Three machines Ready, each stopped unhealthy: the job fails saying why (before, a
    fourth, fifth... machine launched until the job's own timeout)."""
    async with pool_rig(comfy=_DeadComfy, max_machines=1, max_launch_attempts=3) as rig:
        error = await _fails(rig, await rig.job())
        await rig.poll()
        assert str(error) == (
            "no machine: 3 machines of workflow version v1 were Ready but their ComfyUI"
            " never answered (HTTP 503 on /system_stats): is the workflow version's ComfyUI"
            " starting? see its logs on RunComfy (not launched again for 10 min)"
        )
        assert error.reason == "unanswered"
        assert not error.retryable
        bills = rig.sim.billing()
        assert len(bills) == 3
        assert all(b.cost_micros > 0 for b in bills)  # each was Ready: paid
        assert rig.sim.running() == []


class _VersionComfy(_HealthyComfy):
    """The ComfyUI of one machine: dead (503) while its workflow version is in ``DEAD``."""

    def __init__(self, rig: Rig, server_id: str) -> None:
        self.rig = rig
        self.server_id = server_id

    async def system_stats(self) -> dict[str, Any]:
        if self.rig.state.machines[self.server_id].workflow_version in DEAD:
            raise ComfyUIError("server answered 503", status=503)
        return await super().system_stats()


def _per_version(rig: Rig) -> None:
    rig.pool.make_client = lambda sid, url: _VersionComfy(rig, sid)


async def test_each_unanswered_machine_is_said_once_without_its_url(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """One line per stop, saying what failed, how long it billed and which try comes next;
    the last says the version is held; no line holds the machine's URL."""
    caplog.set_level("WARNING", logger="conjure_actors.actors.pool")
    async with pool_rig(comfy=_DeadComfy, max_machines=1, max_launch_attempts=3) as rig:
        await _fails(rig, await rig.job())
    lines = [r.getMessage() for r in caplog.records if "ComfyUI does not answer" in r.getMessage()]
    assert len(lines) == 3, lines
    assert all(
        "Ready but its ComfyUI does not answer (HTTP 503 on /system_stats)" in x for x in lines
    )
    assert all("; stopped after " in x for x in lines)
    assert lines[0].endswith(", launching another (2 of 3)")
    assert lines[1].endswith(", launching another (3 of 3)")
    assert lines[2].endswith(": 3 in a row; workflow version v1 is not launched again for 10 min")
    assert "secret-host" not in caplog.text
    assert "http://" not in caplog.text


async def test_a_held_version_fails_its_new_jobs_at_once_and_others_launch(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """While v1 is held, a job of it fails at once, launching nothing; a job of v2 gets a
    machine (serve goes on serving the versions that work)."""
    DEAD.clear()
    DEAD.add("v1")
    async with pool_rig(max_machines=2, max_launch_attempts=2) as rig:
        _per_version(rig)
        await _fails(rig, await rig.job())
        assert len(rig.sim.billing()) == 2
        start = trio.current_time()
        error = await _fails(rig, await rig.job())
        assert trio.current_time() - start < 1
        assert "2 machines of workflow version v1 were Ready" in str(error)
        j = await rig.job()
        reply = await rig.ask_lease(j, "v2")
        with trio.fail_after(3600):
            lease = await reply.wait()
        assert rig.state.machines[lease.server_id].workflow_version == "v2"
        v1 = [b for b in rig.sim.billing() if b.workflow_version_id == "v1"]
        assert len(v1) == 2  # no v1 machine launched for the second job
        await rig.release(lease.server_id, j)
    DEAD.clear()


async def test_after_the_hold_a_job_of_the_version_launches_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The hold is a time, not for ever: once it is over (its ComfyUI fixed meanwhile), a
    job of the version launches and gets a machine, without a restart."""
    DEAD.clear()
    DEAD.add("v1")
    async with pool_rig(max_machines=1, max_launch_attempts=2, idle_timeout=30.0) as rig:
        _per_version(rig)
        await _fails(rig, await rig.job())
        DEAD.clear()
        await trio.sleep(policy.UNANSWERED_HOLD)
        j = await rig.job()
        with trio.fail_after(3600):
            lease = await rig.lease(j)
        assert rig.state.machines[lease.server_id].workflow_version == "v1"
        assert len(rig.sim.billing()) == 3
        await rig.release(lease.server_id, j)


async def test_a_machine_that_answers_ends_the_series(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Dead machines are not "in a row" when one between them answered: with the first
    machine dead and the second answering (it keeps its job), a second job gets its own
    ``max_launch_attempts`` new machines before failing (3 and 4, not only 3)."""
    script = [False, True, False, False]  # does the n-th machine's ComfyUI answer?

    class _Scripted(_HealthyComfy):
        def __init__(self) -> None:
            self.answers = script.pop(0)

        async def system_stats(self) -> dict[str, Any]:
            if not self.answers:
                raise ComfyUIError("server answered 503", status=503)
            return await super().system_stats()

    async with pool_rig(comfy=_Scripted, max_machines=2, max_launch_attempts=2) as rig:
        first = await rig.job()
        lease = await rig.lease(first)  # on the second machine: the first was dead
        error = await _fails(rig, await rig.job())
        assert "2 machines of workflow version v1" in str(error)
        assert len(rig.sim.billing()) == 4
        assert script == []
        await rig.release(lease.server_id, first)
