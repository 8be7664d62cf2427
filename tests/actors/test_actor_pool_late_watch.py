"""The MachineActor's watch of a prompt its job gave up on (``_late_watch_child``), driven
alone against a scripted ComfyUI: ``/interrupt`` is a flag ComfyUI reads at the next node, so
a stop counts only once a lookup finds the prompt gone."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import trio
import trio.testing

from conjure_actors.actors import pool as pool_mod
from conjure_actors.actors.messages import LostSignal
from conjure_actors.domain import events as ev

PROMPT = "00000000-0000-4000-8000-00000000a001"


class ScriptedComfy:
    """A late prompt that lands at ``lands`` (trio time) and runs until ``takes`` targeted
    interrupts were accepted (None: it never stops), then is in the history."""

    def __init__(self, lands: float, takes: int | None) -> None:
        self.lands = lands
        self.takes = takes
        self.interrupts = 0
        self.ended_at: float | None = None

    def running(self) -> bool:
        return self.ended_at is None and trio.current_time() >= self.lands

    async def find_prompt(self, prompt_id: str, **kwargs: Any) -> str:
        if trio.current_time() < self.lands:
            return "unknown"
        return "running" if self.ended_at is None else "done"

    async def interrupt(self, prompt_id: str | None = None) -> None:
        self.interrupts += 1  # accepted (ComfyUI always answers 200)
        if self.takes is not None and self.interrupts >= self.takes and self.ended_at is None:
            self.ended_at = trio.current_time()

    async def delete_from_queue(self, *prompt_ids: str) -> None:
        raise AssertionError("the prompt is never pending here")


class WatchHost:
    """What ``_late_watch_child`` and ``_on_late_watch_ended`` use of the MachineActor: its
    state (no job follows the prompt), its mailbox (recorded), the watches, the journal."""

    def __init__(self) -> None:
        self.ctx = SimpleNamespace(state=SimpleNamespace(jobs={}), now=trio.current_time)
        self.ctx.emit = self._emit
        self.pool = SimpleNamespace(late={})
        self.told: list[tuple[float, Any]] = []
        self.emitted: list[Any] = []

    async def _tell(self, msg: Any) -> None:
        self.told.append((trio.current_time(), msg))

    async def _emit(self, *events: Any) -> None:
        self.emitted.extend(events)


async def _watch(comfy: ScriptedComfy, window: float) -> WatchHost:
    """Run one watch to its end; then handle its end as the actor does."""
    host = WatchHost()
    watch = pool_mod._LateWatch("s1", "j1", trio.current_time() + window)
    host.pool.late[PROMPT] = watch
    await pool_mod.MachineActor._late_watch_child(host, PROMPT, watch, comfy, LostSignal())  # type: ignore[arg-type]
    ((_, ended),) = host.told
    await pool_mod.MachineActor._on_late_watch_ended(host, ended)  # type: ignore[arg-type]
    return host


async def test_a_stop_is_logged_once_a_lookup_finds_the_prompt_gone_not_at_the_window_end(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The prompt lands just before the watch's window ends and its first interrupts do not
    take (a long node): the watch goes on past its window, interrupting it again, and logs
    the stop only once a lookup finds it gone, confirmed."""
    comfy = ScriptedComfy(lands=15.0, takes=3)
    host = await _watch(comfy, window=25.0)
    ((ended_at, _),) = host.told
    assert comfy.ended_at is not None, "the watch ended while the prompt still ran"
    assert ended_at >= comfy.ended_at
    assert comfy.interrupts == 3
    (stopped,) = host.emitted
    assert isinstance(stopped, ev.LatePromptStopped)
    assert (stopped.was, stopped.confirmed) == ("running", True)


async def test_a_prompt_still_running_long_after_its_interrupt_is_logged_unconfirmed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An interrupt that never takes: the watch gives up LATE_PROMPT_CONFIRM s after its
    first stop, and the event says the stop was sent, not confirmed."""
    comfy = ScriptedComfy(lands=15.0, takes=None)
    host = await _watch(comfy, window=25.0)
    ((ended_at, _),) = host.told
    assert ended_at >= 20.0 + pool_mod.LATE_PROMPT_CONFIRM
    (stopped,) = host.emitted
    assert (stopped.was, stopped.confirmed) == ("running", False)


async def test_a_stop_left_unconfirmed_by_a_restart_on_a_machine_gone_is_still_logged(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The MachineActor restarts after its watch interrupted the prompt and before a lookup
    confirmed it; the machine went meanwhile, so the watch cannot resume: the stop is
    logged (sent, not confirmed), not dropped with the watch."""
    host = WatchHost()
    host.pool.live = {}  # the machine is gone
    watch = pool_mod._LateWatch("s1", "j1", trio.current_time() + 900.0, was="running")
    host.pool.late[PROMPT] = watch
    async with trio.open_nursery() as nursery:
        host.start_soon = lambda fn, *args, name=None: nursery.start_soon(fn, *args)
        pool_mod.MachineActor._start_late_watch(host, PROMPT)  # type: ignore[arg-type]
    ((_, ended),) = host.told
    await pool_mod.MachineActor._on_late_watch_ended(host, ended)  # type: ignore[arg-type]
    (stopped,) = host.emitted
    assert (stopped.prompt_id, stopped.was, stopped.confirmed) == (PROMPT, "running", False)
    assert host.pool.late == {}


async def test_a_watch_that_stopped_nothing_ends_silently_with_its_machine(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A restart finds a watch that stopped nothing on a machine now gone: it is dropped,
    nothing is logged."""
    host = WatchHost()
    host.pool.live = {}
    host.pool.late[PROMPT] = pool_mod._LateWatch("s1", "j1", trio.current_time() + 900.0)
    pool_mod.MachineActor._start_late_watch(host, PROMPT)  # type: ignore[arg-type]
    assert host.pool.late == {}
    assert host.told == []
