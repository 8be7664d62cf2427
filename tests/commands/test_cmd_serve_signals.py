"""``serve``'s stop on signals: the receiver is held through the drain and the stop of
every machine, so a second signal cuts the drain short and never skips that stop."""

from __future__ import annotations

import signal

import pytest
import trio
import trio.testing

from conjure_actors.commands.serve import _first_signal_during_start_up, _stop_on_signals


async def test_a_second_signal_cuts_the_drain_short_and_later_ones_wait_for_the_stop(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """SIGTERM: no new jobs, drain. A second SIGTERM during the drain: it ends at once and
    the machines are stopped. A third during that stop: a line, and the stop goes on to
    its end (its answer returned)."""
    send, receive = trio.open_memory_channel[int](10)
    steps: list[str] = []
    stop_began = trio.Event()
    stop_may_end = trio.Event()

    async def drain() -> None:
        steps.append("drain")
        await trio.sleep_forever()  # a job runs on

    async def shutdown() -> list[str]:
        steps.append("shutdown")
        stop_began.set()
        await stop_may_end.wait()
        steps.append("stopped")
        return ["m1"]

    async with trio.open_nursery() as nursery:
        answer: list[list[str]] = []

        async def serve() -> None:
            answer.append(
                await _stop_on_signals(
                    receive,
                    drain_timeout=3600.0,
                    stop_accepting=lambda: steps.append("no new jobs"),
                    drain=drain,
                    shutdown=shutdown,
                )
            )

        nursery.start_soon(serve)
        await send.send(signal.SIGTERM)
        await trio.testing.wait_all_tasks_blocked()
        assert steps == ["no new jobs", "drain"]
        await send.send(signal.SIGTERM)
        await stop_began.wait()
        await send.send(signal.SIGINT)
        await trio.testing.wait_all_tasks_blocked()
        assert steps == ["no new jobs", "drain", "shutdown"]
        stop_may_end.set()
    assert answer == [["m1"]]
    assert steps[-1] == "stopped"
    err = capsys.readouterr().err
    assert "SIGTERM again: drain cut short; stopping every machine now" in err
    assert "SIGINT: still stopping every machine" in err


async def test_the_drain_ends_by_itself_after_its_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """One signal: the drain gets its timeout, then the machines stop."""
    send, receive = trio.open_memory_channel[int](10)
    steps: list[str] = []

    async def drain() -> None:
        await trio.sleep_forever()

    async def shutdown() -> list[str]:
        steps.append(f"shutdown at {trio.current_time():g}")
        return []

    await send.send(signal.SIGTERM)
    left = await _stop_on_signals(
        receive, drain_timeout=30.0, stop_accepting=lambda: None, drain=drain, shutdown=shutdown
    )
    assert left == []
    assert steps == ["shutdown at 30"]


async def test_a_signal_taken_during_start_up_stops_serving_without_another(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A signal taken during start-up is the first: serving stops once it is up, with no
    second signal awaited (nothing more is sent here)."""
    send, receive = trio.open_memory_channel[int](10)
    steps: list[str] = []

    async def shutdown() -> list[str]:
        steps.append("shutdown")
        return []

    async def drain() -> None:
        steps.append("drain")

    with trio.fail_after(60):
        await _stop_on_signals(
            receive,
            first=signal.SIGTERM,
            drain_timeout=3600.0,
            stop_accepting=lambda: steps.append("no new jobs"),
            drain=drain,
            shutdown=shutdown,
        )
    assert steps == ["no new jobs", "drain", "shutdown"]
    del send


async def test_start_up_takes_the_first_signal_and_leaves_the_next(
    autojump_clock: trio.testing.MockClock, capsys: pytest.CaptureFixture[str]
) -> None:
    """During start-up the first signal is taken (and said); a second stays for the stop
    loop, where it cuts the drain short."""
    send, receive = trio.open_memory_channel[int](10)
    early: list[int] = []
    start_up = trio.CancelScope()
    await send.send(signal.SIGTERM)
    await send.send(signal.SIGINT)
    watched = trio.Event()
    await _first_signal_during_start_up(receive, early, start_up, watched)
    assert watched.is_set()
    assert early == [signal.SIGTERM]
    assert receive.receive_nowait() == signal.SIGINT
    assert "SIGTERM: stopping once start-up is done" in capsys.readouterr().err


async def test_start_up_without_a_signal_takes_none(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Start-up done with no signal: the watch ends (cancelled) having taken nothing."""
    send, receive = trio.open_memory_channel[int](10)
    early: list[int] = []
    start_up = trio.CancelScope()
    watched = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_first_signal_during_start_up, receive, early, start_up, watched)
        await trio.sleep(5)
        start_up.cancel()
        await watched.wait()
    assert early == []
    del send
