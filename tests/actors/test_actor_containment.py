"""Containment, as a property: make any actor's handler raise an unexpected exception on
any of its messages, every time; whatever happens to the run, afterwards no simulated
machine is left running, the log replays to the live state, and one line says what failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from actor_support import open_test_cloud, run_on_autojump, sim_config
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog
from conjure_actors.actors import actors as assembly
from conjure_actors.actors import job as job_module
from conjure_actors.actors import messages as msgs
from conjure_actors.actors import monitor as monitor_module
from conjure_actors.actors.example import bundled_workflow, example_sketch_png
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state, state_to_builtins
from conjure_actors.errgroups import describe, meaningful
from conjure_actors.testing import open_simulated_conjure

GRAPH = json.loads(bundled_workflow())

# (actor class name, message class): a message each actor really handles in a run.
TARGETS: list[tuple[str, type[Any]]] = [
    ("MachineActor", msgs.LeaseMachine),
    ("MachineActor", msgs.ReleaseMachine),
    ("MachineActor", msgs.PollNow),
    ("CostActor", msgs.ApproveLaunch),
    ("CostActor", msgs.AccrueNow),
    ("WorkflowActor", job_module._Leased),
    ("WorkflowActor", job_module._Submitted),
    ("WorkflowActor", job_module._Progress),
    ("WorkflowActor", job_module._Downloaded),
    ("MonitorActor", monitor_module._Tick),
    ("MonitorActor", monitor_module._Seen),
]


class InjectedError(Exception):
    """The unexpected exception a handler raises in this test."""


class _LiveView:
    """A sink that redraws (as ``conjure run``'s views do): the MonitorActor ticks it every
    refresh, so ``_Tick`` comes as often as in a run with a terminal (with no sink it comes
    only when a stall check is due)."""

    def record(self, seq: int, ts: float, event: Any, state: Any) -> None:
        """Nothing to show."""

    def tick(self, state: Any) -> None:
        """Nothing to redraw."""

    def close(self) -> None:
        """Nothing to close."""


def _raising(
    original: Any, target: type[Any], what: str, raised: list[str], times: int | None
) -> Any:
    async def receive(self: Any, msg: Any) -> Any:
        if isinstance(msg, target) and (times is None or len(raised) < times):
            raised.append(what)
            raise InjectedError(what)
        return await original(self, msg)

    return receive


async def _run(
    tmp: Path, actor: str, target: type[Any]
) -> tuple[list[str], str | None, Any, Any, Any]:
    """Two jobs with the handler broken; returns (lines that say what failed, the run's
    error line if it stopped on one, the cloud's running machines, the live state, the
    replayed state)."""
    wall = TrioWallClock()
    log: eventlog.MemoryLog[Any] = eventlog.MemoryLog(Event)
    what = f"injected into {actor} on {target.__name__}"
    lines: list[str] = []
    stopped: str | None = None
    state: Any = None
    async with open_test_cloud(wall.now, ready_delay=5.0) as cloud:
        try:
            async with open_simulated_conjure(
                cloud, log, sim_config(cloud), wall=wall, out_dir=tmp, monitor=_LiveView()
            ) as conjure:
                state = conjure.state
                for i in range(2):
                    await conjure.submit(
                        GRAPH,
                        image=example_sketch_png(),
                        prompt=f"p{i}",
                        sets=["20.steps=2", "44.steps=2"],
                    )
                with trio.move_on_after(7200):
                    await conjure.wait_until_idle()
        except BaseException as exc:  # the run may stop: its one line is what we check
            if meaningful(exc) is None:
                raise
            stopped = describe(exc)
            lines.append(stopped)
        running = cloud.running()
    events = [r.event for r in log.records()]
    lines += [f"{e.error_type}: {e.message}" for e in events if type(e).__name__ == "ActorCrashed"]
    lines += [e.message for e in events if type(e).__name__ == "JobFailed"]
    replayed = initial_state()
    for event in events:
        apply(replayed, event)
    return [line for line in lines if what in line], stopped, running, state, replayed


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(target=st.sampled_from(TARGETS), times=st.one_of(st.none(), st.integers(1, 3)))
def test_a_handler_that_raises_never_leaves_a_machine_running(
    tmp_path_factory: pytest.TempPathFactory, target: tuple[str, type[Any]], times: int | None
) -> None:
    """Any actor, any message, an unexpected exception (the first ``times`` times it comes,
    or every time): no machine left running, the log replays to the live state, and one
    line says what failed."""
    actor, message = target
    cls = getattr(assembly, actor)
    what = f"injected into {actor} on {message.__name__}"
    tmp = tmp_path_factory.mktemp("containment")
    raised: list[str] = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "receive", _raising(cls.receive, message, what, raised, times))
        said, stopped, running, live, replayed = run_on_autojump(_run, tmp, actor, message)
    assert running == [], f"{actor}/{message.__name__}: machines left running: {running}"
    assert live is not None
    assert state_to_builtins(replayed) == state_to_builtins(live)
    if raised:  # (a message this run never sent leaves nothing to say)
        assert said, f"{actor}/{message.__name__}: no line says what failed"
    else:
        assert {j.status for j in live.jobs.values()} == {"succeeded"}
    assert all("\n" not in line for line in said)
    if stopped is not None:  # the run stopped on it: its own line names the failure
        assert what in stopped, stopped


def test_a_run_stopped_by_a_crash_loop_names_the_crash_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """The supervisor's line names the crash it gave up on: the run's stop line does not
    say it a second time."""
    cls = assembly.MonitorActor
    what = "injected into MonitorActor on _Tick"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cls, "receive", _raising(cls.receive, monitor_module._Tick, what, [], None))
        _, stopped, running, _, _ = run_on_autojump(
            _run, tmp_path_factory.mktemp("loop"), "MonitorActor", monitor_module._Tick
        )
    assert running == []
    assert stopped is not None
    assert "gave up" in stopped
    assert stopped.count(what) == 1, stopped
