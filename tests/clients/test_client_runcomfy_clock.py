"""The RunComfy client measures RunComfy's clock from its answers' ``Date`` and hands over
RunComfy's times in the local clock's basis (QA: qa11 findings 1 and 2)."""

from __future__ import annotations

import email.utils
import logging
import math
import random
from collections.abc import Sequence
from typing import Any

import httpx
import msgspec
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients import runcomfy
from conjure_actors.clients.runcomfy import (
    ClockOffset,
    RunComfyClient,
    Server,
    parse_http_date,
)
from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.runcomfy import format_iso

USER = "u-clock"
TOKEN = "tok-Clock-SECRET-91x"
BASE = "https://api.runcomfy.test"
READY_AGO = 30.0  # the machine became Ready this long before each answer (RunComfy's clock)

AUTO = "auto"


class _Dated(httpx.AsyncBaseTransport):
    """RunComfy whose clock runs ``offset`` s ahead of ``wall``: each answer takes ``out`` s
    to be made and ``back`` s to come back, and is dated (``Date``) when it is made."""

    def __init__(
        self,
        wall: TrioWallClock,
        offset: float,
        *,
        out: float = 0.0,
        back: float = 0.0,
        dates: Sequence[str] | str = AUTO,
    ) -> None:
        self.wall = wall
        self.offset = offset
        self.out = out
        self.back = back
        self.dates = dates
        self.ready_at: list[float] = []  # RunComfy's Ready time in each answer

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await trio.sleep(self.out)
        remote = self.wall.now() + self.offset
        ready_us = round((remote - READY_AGO) * 1_000_000)
        self.ready_at.append(ready_us / 1_000_000)
        body = msgspec.json.encode(
            {
                "server_id": "s-1",
                "current_status": "Ready",
                "server_type": "medium",
                "estimated_duration": 600,
                "service_ready_at": format_iso(ready_us),
                "estimated_stopping_at": format_iso(ready_us + 600_000_000),
            }
        )
        if self.dates == AUTO:
            dates: Sequence[str] = [email.utils.formatdate(remote, usegmt=True)]
        else:
            dates = list(self.dates)
        await trio.sleep(self.back)
        return httpx.Response(
            200,
            headers=[("content-type", "application/json"), *(("date", d) for d in dates)],
            content=body,
        )


async def _statuses(
    transport: _Dated, n: int = 1, *, wall: TrioWallClock | None = None
) -> list[tuple[Server, float]]:
    """``n`` status answers through a client on ``wall``: (server, local time it came)."""
    async with httpx.AsyncClient(transport=transport) as http:
        client = RunComfyClient(
            BASE, USER, TOKEN, http=http, rng=random.Random(1), wall=wall and wall.now
        )
        out = []
        for _ in range(n):
            server = await client.status("s-1")
            out.append((server, transport.wall.now()))
            await trio.sleep(7.3)
        return out


def _mock_run(fn: Any, *args: Any) -> Any:
    return trio.run(fn, *args, clock=trio.testing.MockClock(autojump_threshold=0))


@given(
    offset=st.floats(-86_400.0, 86_400.0),
    rtt=st.floats(0.0, 20.0),  # any answer within the client's request timeout
    skew=st.floats(-0.25, 0.25),
    n=st.integers(1, 5),
)
def test_the_offset_from_date_headers_is_within_a_second_and_a_half(
    offset: float, rtt: float, skew: float, n: int
) -> None:
    """Any offset within a day and any round trip (the answer made about halfway): the
    estimate is within 1.5 s of the true offset, and a corrected Ready time within 1.5 s
    of the local time RunComfy's Ready time stands for."""
    out = max(0.0, rtt / 2 + skew)
    back = max(0.0, rtt / 2 - skew)

    async def main() -> None:
        wall = TrioWallClock()
        transport = _Dated(wall, offset, out=out, back=back)
        answers = await _statuses(transport, n, wall=wall)
        for (server, came), remote_ready in zip(answers, transport.ready_at, strict=True):
            assert server.service_ready_at is not None
            # RunComfy's Ready time, said on the local clock (the answer was made `back` s
            # before it came back here)
            local_ready = remote_ready - offset
            if abs(offset) >= 3.5:  # beyond the threshold, however the estimate errs
                assert abs(server.service_ready_at - local_ready) <= 1.5
            assert came - back - READY_AGO == pytest.approx(local_ready, abs=1e-3)

    _mock_run(main)


@given(offset=st.floats(-86_400.0, 86_400.0), rtt=st.floats(0.0, 60.0))
def test_clock_offset_estimate_is_within_a_second_and_a_half(offset: float, rtt: float) -> None:
    """ClockOffset alone: samples of an answer made mid-trip, Date in whole seconds."""
    clock = ClockOffset()
    local = 1_795_000_000.0
    for i in range(7):
        sent = local + i * 3.7
        remote = sent + rtt / 2 + offset
        clock.sample(float(int(remote)), sent, sent + rtt)
    assert clock.estimate is not None
    assert abs(clock.estimate - offset) <= 1.5


@given(
    offset=st.floats(-86_400.0, 86_400.0),
    phases=st.lists(st.floats(0.0, 0.999), min_size=8, max_size=15),  # exact at 1.8e9 s
)
def test_answers_at_different_fractions_of_a_second_narrow_the_estimate(
    offset: float, phases: list[float]
) -> None:
    """Answers with a short round trip (20 ms), dated at fractions of RunComfy's second
    spread over it: the intervals they give cut each other down to what the fractions
    leave open (about the round trip when they cover the second)."""
    clock = ClockOffset()
    for i, phase in enumerate(phases):
        remote = 1_795_000_000.0 + 10 * i + phase  # RunComfy's time at the answer
        sent = remote - 0.01 - offset
        clock.sample(float(math.floor(remote)), sent, sent + 0.02)
    assert clock.estimate is not None
    spread = max(phases) - min(phases)
    assert abs(clock.estimate - offset) <= (1 - spread) / 2 + 0.02


def test_a_step_of_runcomfy_s_clock_is_followed() -> None:
    """RunComfy's clock steps 10 s: the old answers' intervals no longer meet the new
    ones; the estimate moves to the new offset once those are the most (median)."""
    clock = ClockOffset()
    for i in range(15):
        clock.sample(1_000.0 + 10 * i + 60, 1_000.0 + 10 * i, 1_000.0 + 10 * i)
    for i in range(15, 23):
        clock.sample(1_000.0 + 10 * i + 70, 1_000.0 + 10 * i, 1_000.0 + 10 * i)
    assert clock.estimate is not None
    assert abs(clock.estimate - 70.5) < 0.01


def test_an_offset_near_the_threshold_is_corrected_steadily() -> None:
    """Estimates around 2 s (2.1, 1.8, 2.2...): once corrected, every time of a machine is
    (the correction switched off and on between its Ready and its stop: a bill 2 s off)."""
    clock = ClockOffset()
    corrections = []
    for i, offset in enumerate([2.1, 1.8, 2.2, 1.6, 1.9]):
        clock._bounds.clear()  # each answer alone: its own estimate
        clock.sample(1_000.0 + i + offset - 0.5, 1_000.0 + i, 1_000.0 + i)
        corrections.append(clock.correction)
    assert all(c != 0.0 for c in corrections), corrections
    clock._bounds.clear()
    clock.sample(1_100.0 + 0.4 - 0.5, 1_100.0, 1_100.0)
    assert clock.correction == 0.0  # under half the threshold: synced again


def test_one_odd_answer_does_not_move_the_estimate() -> None:
    """A single answer dated an hour off (a proxy's clock) among good ones: the median holds."""
    clock = ClockOffset()
    for i in range(5):
        clock.sample(1_000.0 + 10 * i + 900, 1_000.0 + 10 * i, 1_000.0 + 10 * i)
    clock.sample(1_060.0 + 3600, 1_060.0, 1_060.0)
    assert clock.estimate is not None
    assert abs(clock.estimate - 900.5) < 0.01
    assert clock.correction == clock.estimate


@pytest.mark.parametrize("offset", [-900.0, 900.0])
def test_the_first_answer_is_already_corrected(offset: float) -> None:
    """The first answer's own Date corrects its times (a launch's answer is the first)."""

    async def main() -> None:
        wall = TrioWallClock()
        transport = _Dated(wall, offset)
        ((server, came),) = await _statuses(transport, wall=wall)
        assert server.service_ready_at == pytest.approx(came - READY_AGO, abs=1.0)
        assert server.estimated_stopping_at == pytest.approx(came - READY_AGO + 600, abs=1.0)

    _mock_run(main)


@pytest.mark.parametrize("offset", [0.0, 0.9, -1.4])
def test_a_synced_host_gets_runcomfy_s_times_unchanged(offset: float) -> None:
    """Within the threshold (Date has whole seconds) nothing is corrected: the very floats
    on the wire, as before (the ledger's match with RunComfy's bill is exact)."""

    async def main() -> None:
        wall = TrioWallClock()
        transport = _Dated(wall, offset, out=0.3, back=0.3)
        answers = await _statuses(transport, 4, wall=wall)
        assert [s.service_ready_at for s, _ in answers] == transport.ready_at

    _mock_run(main)


@pytest.mark.parametrize(
    "dates",
    [
        [],
        ["yesterday, around noon"],
        ["Mon, 99 Foo 2026 25:61:61 GMT"],
        ["Mon, 07 Dec 2026 10:00:00 GMT", "Mon, 07 Dec 2026 10:15:00 GMT"],
    ],
    ids=["none", "not-a-date", "malformed", "two"],
)
def test_an_answer_without_one_readable_date_corrects_nothing(dates: list[str]) -> None:
    """No ``Date``, a malformed one, or two: no sample, RunComfy's times as they are."""

    async def main() -> None:
        wall = TrioWallClock()
        transport = _Dated(wall, 900.0, dates=dates)
        answers = await _statuses(transport, 2, wall=wall)
        assert [s.service_ready_at for s, _ in answers] == transport.ready_at

    _mock_run(main)


def test_a_client_without_a_local_clock_corrects_nothing() -> None:
    """``wall=None`` (the default): times handed over as RunComfy said them."""

    async def main() -> None:
        transport = _Dated(TrioWallClock(), 900.0)
        answers = await _statuses(transport, 2, wall=None)
        assert [s.service_ready_at for s, _ in answers] == transport.ready_at

    _mock_run(main)


def test_parse_http_date_reads_rfc_9110_forms() -> None:
    """IMF-fixdate and the two obsolete forms; anything else is None."""
    want = 1_796_637_600.0  # Mon, 07 Dec 2026 10:00:00 GMT
    assert parse_http_date("Mon, 07 Dec 2026 10:00:00 GMT") == want
    assert parse_http_date("Monday, 07-Dec-26 10:00:00 GMT") == want
    assert parse_http_date("Mon Dec  7 10:00:00 2026") == want
    for bad in (None, "", "soon", "Mon, 32 Dec 2026 10:00:00 GMT"):
        assert parse_http_date(bad) is None


@pytest.mark.parametrize(
    ("offset", "words"), [(900.0, "900 s behind RunComfy's"), (-900.0, "900 s ahead of")]
)
def test_a_large_offset_is_told_once(
    offset: float, words: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Above 5 s the operator is told once per process (not per answer, not per client),
    in one line without the URL or the token."""
    monkeypatch.setattr(runcomfy, "_clock_told", set())
    caplog.set_level(logging.WARNING, logger="conjure_actors.clients.runcomfy")

    async def main() -> None:
        wall = TrioWallClock()
        await _statuses(_Dated(wall, offset), 3, wall=wall)
        await _statuses(_Dated(wall, offset), 2, wall=wall)  # another client

    _mock_run(main)
    told = [r.getMessage() for r in caplog.records if "clock" in r.getMessage()]
    (line,) = told
    assert words in line
    assert "NTP" in line
    assert "\n" not in line
    assert BASE not in line
    assert TOKEN not in line


def test_a_small_offset_is_not_told(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """3 s off: corrected, but not worth a line (5 s is)."""
    monkeypatch.setattr(runcomfy, "_clock_told", set())
    caplog.set_level(logging.WARNING, logger="conjure_actors.clients.runcomfy")

    async def main() -> None:
        wall = TrioWallClock()
        await _statuses(_Dated(wall, 3.0), 3, wall=wall)

    _mock_run(main)
    assert [r for r in caplog.records if "clock" in r.getMessage()] == []
