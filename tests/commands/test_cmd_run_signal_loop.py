"""``run``'s signal loop (``_stop_on_signals``) fed by a memory channel: held from start-up,
the first signal stops the run (at once, or once start-up is done), a second Ctrl-C quits at
once naming what may still run, later SIGTERM/SIGHUP change nothing."""

from __future__ import annotations

import signal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
import trio.testing

from conjure_actors.commands.run import (
    EXIT_INTERRUPTED,
    QUIT_SIMULATED,
    _stop_on_signals,
    _Stopping,
    resume_waits_for,
)

LOG = Path("runs") / "r 1.log"


class Loop:
    """The loop running in a nursery, its quits and detaches recorded."""

    def __init__(self, stopping: _Stopping) -> None:
        self.stopping = stopping
        self.quits: list[int] = []
        self.detached = 0
        self.send, self.receive = trio.open_memory_channel[int](10)

    def quit_now(self, code: int) -> None:
        self.quits.append(code)

    def detach(self) -> None:
        self.detached += 1

    async def signal(self, signum: signal.Signals) -> None:
        await self.send.send(int(signum))
        await trio.testing.wait_all_tasks_blocked()


async def _loop(nursery: trio.Nursery, conjure: Any = None) -> Loop:
    stopping = _Stopping()
    stopping.conjure = conjure
    loop = Loop(stopping)
    nursery.start_soon(
        lambda: _stop_on_signals(
            loop.receive, stopping, LOG, quit_now=loop.quit_now, detach=loop.detach
        )
    )
    await trio.testing.wait_all_tasks_blocked()
    return loop


def _conjure(machines: list[str], launching: int) -> Any:
    return SimpleNamespace(
        running_machines=lambda: machines,
        state=SimpleNamespace(launch_requests=dict.fromkeys(range(launching))),
    )


async def test_a_signal_during_start_up_stops_the_run_once_it_is_up(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGTERM)
        nursery.cancel_scope.cancel()
    assert loop.stopping.signal == signal.SIGTERM
    assert loop.stopping.work.cancel_called
    assert loop.quits == []
    err = capsys.readouterr().err
    assert err.startswith("terminated: stopping once start-up is done")
    assert "Ctrl-C again to quit at once" in err
    assert not loop.stopping.start_up.cancel_called


async def test_a_signal_during_a_start_up_that_launched_nothing_stops_it_at_once(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nothing launched or adopted yet (a fresh run whose RunComfy does not answer, say):
    start-up is cancelled at once instead of waited for (its retries could take a minute)."""
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        loop.stopping.nothing_to_stop = lambda: True
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.stopping.signal == signal.SIGINT
    assert loop.stopping.start_up.cancel_called
    assert loop.stopping.pre_start.cancel_called  # a fresh run's version check too
    assert loop.stopping.work.cancel_called
    assert loop.quits == []
    assert capsys.readouterr().err == "interrupted: stopping now (nothing was launched yet)\n"


async def test_a_signal_during_the_run_stops_it_at_once(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery, conjure=_conjure([], 0))
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.stopping.signal == signal.SIGINT
    assert loop.stopping.work.cancel_called
    assert loop.quits == []
    assert capsys.readouterr().err == (
        "interrupted: stopping launches, leaving unfinished jobs for --resume, stopping"
        " machines (Ctrl-C again to quit at once)\n"
    )


async def test_a_second_ctrl_c_during_start_up_quits_at_once_naming_the_log(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGINT)
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.quits == [EXIT_INTERRUPTED]
    last = capsys.readouterr().err.splitlines()[-1]
    assert last.startswith("quitting now, during start-up;")
    assert "launches in flight are in the log 'runs/r 1.log'" in last
    assert last.endswith("run --resume 'runs/r 1.log' stops them")


async def test_a_second_ctrl_c_during_the_run_names_machines_and_launches(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery, conjure=_conjure(["srv-1"], 2))
        await loop.signal(signal.SIGTERM)
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.quits == [EXIT_INTERRUPTED]
    assert capsys.readouterr().err.splitlines()[-1] == (
        "quitting now; machines that may still be running: srv-1 and 2 launches in flight;"
        " python -m conjure_actors run --resume 'runs/r 1.log' stops them"
    )


async def test_the_start_up_signal_is_kept_once_start_up_is_done(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A signal during start-up, start-up ends, then Ctrl-C: the quit names the machines."""
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGTERM)
        loop.stopping.conjure = _conjure([], 0)
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.stopping.signal == signal.SIGTERM
    assert loop.quits == [EXIT_INTERRUPTED]
    assert capsys.readouterr().err.splitlines()[-1] == "quitting now; no machine is running"


@pytest.mark.parametrize("later", [signal.SIGTERM, signal.SIGHUP])
async def test_a_later_sigterm_or_sighup_changes_nothing(
    autojump_clock: trio.abc.Clock,
    capsys: pytest.CaptureFixture[str],
    later: signal.Signals,
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGINT)
        capsys.readouterr()
        await loop.signal(later)
        nursery.cancel_scope.cancel()
    assert loop.stopping.signal == signal.SIGINT
    assert loop.quits == []
    assert loop.detached == 0
    assert capsys.readouterr().err == ""


async def test_a_hangup_detaches_from_the_terminal_and_stops(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGHUP)
        nursery.cancel_scope.cancel()
    assert loop.detached == 1
    assert loop.stopping.signal == signal.SIGHUP
    assert loop.stopping.work.cancel_called
    assert capsys.readouterr().err.startswith("hangup: stopping once start-up is done")


async def test_the_work_scope_cancelled_during_start_up_is_cancelled_when_entered(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The run's work scope, cancelled before start-up ends, stops its first checkpoint."""
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery)
        await loop.signal(signal.SIGTERM)
        nursery.cancel_scope.cancel()
    reached = False
    with loop.stopping.work:
        await trio.sleep_forever()
        reached = True
    assert not reached
    assert loop.stopping.work.cancelled_caught


async def test_a_second_ctrl_c_on_the_simulated_cloud_says_nothing_is_left(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """The embedded simulated cloud ends with the process: '--resume LOG stops them' was
    untrue there (a fresh embedded cloud cannot hold the old machines)."""
    stopping = _Stopping("simulated")
    stopping.conjure = _conjure(["srv-1"], 1)
    loop = Loop(stopping)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: _stop_on_signals(
                loop.receive, stopping, LOG, quit_now=loop.quit_now, detach=loop.detach
            )
        )
        await trio.testing.wait_all_tasks_blocked()
        await loop.signal(signal.SIGINT)
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    assert loop.quits == [EXIT_INTERRUPTED]
    last = capsys.readouterr().err.splitlines()[-1]
    assert last == QUIT_SIMULATED
    assert "--resume" not in last


@pytest.mark.parametrize("mode", ["runcomfy", "simulated"])
def test_a_resume_says_what_its_launches_in_flight_wait_for(mode: str) -> None:
    """A resumed run whose log ended with launches in flight waited ~60 s without a line;
    on the simulated cloud nothing can ever appear: they are closed at once (no 60 s)."""
    line = resume_waits_for(2, mode)
    assert line.startswith("resuming: 2 launches in flight when the log ended")
    assert ("60 s" in line) == (mode == "runcomfy")
    assert ("closed as failed at once" in line) == (mode == "simulated")
    assert ("simulated cloud, which ended with it" in line) == (mode == "simulated")


async def test_a_stop_that_waits_for_a_launch_in_flight_says_for_what_and_how_long(
    autojump_clock: trio.abc.Clock, capsys: pytest.CaptureFixture[str]
) -> None:
    """A resumed run's launch in flight is waited for (its landing grace: RunComfy may list
    its machine, which the stop then stops): the first Ctrl-C said only "stopping
    machines", then nothing for up to a minute (QA session 29, H9b)."""
    conjure = _conjure([], 1)
    conjure.state.launch_requests = {"k1": None}
    conjure.pool = SimpleNamespace(landing={"k1": trio.current_time() + 58, "closed": 0.0})
    async with trio.open_nursery() as nursery:
        loop = await _loop(nursery, conjure)
        await loop.signal(signal.SIGINT)
        nursery.cancel_scope.cancel()
    err = capsys.readouterr().err
    assert err.startswith("interrupted: stopping launches")
    assert (
        "waiting up to 58 s more for RunComfy to list the machine of 1 launch in flight"
        " (Ctrl-C again: quit now; `status` then lists it)"
    ) in err
    assert loop.quits == []
