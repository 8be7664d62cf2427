"""follow over a record it cannot decode (an event tag a newer program wrote): every record
before it is yielded, in order, then its error is raised (it was raised first, losing the
records read in the same chunk)."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from unittest import mock

import msgspec
import pytest
import trio
import trio.testing
from eventlog_testtypes import Ev, Noted
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import eventlog


class Newer(msgspec.Struct, frozen=True, tag="t.newer"):
    """An event of a newer program: a tag ``Ev`` does not have."""

    text: str


def _log(path: Path, before: int, after: int) -> None:
    """``before`` known records, one ``Newer``, ``after`` known records; the writer closed."""
    path.unlink(missing_ok=True)
    with eventlog.open_writer(path, Ev, sync="none") as writer:
        writer.append_many([Noted(f"n{i}") for i in range(before)])
    with eventlog.open_writer(path, Newer | Noted, sync="none") as writer:  # type: ignore[arg-type]
        writer.append(Newer("from the future"))
        writer.append_many([Noted(f"a{i}") for i in range(after)])


def _follow(path: Path) -> tuple[list[int], BaseException | None, BaseException | None]:
    """The seqs follow yields, the error it raised, and what the next call raised."""
    seqs: list[int] = []
    raised: list[BaseException | None] = [None, None]

    async def main() -> None:
        follower = eventlog.follow(path, Ev, poll_interval=0.1)
        with trio.fail_after(60):
            try:
                async for record in follower:
                    seqs.append(record.seq)  # noqa: PERF401 (kept when it raises)
            except eventlog.EventLogError as exc:
                raised[0] = exc
            try:
                await anext(follower)
            except eventlog.EventLogError as exc:
                raised[1] = exc

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return seqs, raised[0], raised[1]


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(
    before=st.integers(0, 40),
    after=st.integers(0, 3),
    chunk=st.sampled_from([64, 200, 4 * 1024 * 1024]),
)
def test_every_record_before_an_undecodable_one_is_yielded_then_its_error(
    tmp_path: Path, before: int, after: int, chunk: int
) -> None:
    """Records 1..before, in order, then UnknownEventError naming the record's seq and tag
    (whatever the read chunk holds), and the same error on the next call."""
    path = tmp_path / "log"
    _log(path, before, after)
    with mock.patch("eventlog.follow.CHUNK", chunk):
        seqs, error, again = _follow(path)
    assert seqs == list(range(1, before + 1))
    assert isinstance(error, eventlog.UnknownEventError)
    assert (error.seq, error.tag) == (before + 1, "t.newer")
    assert again is error


def test_a_failing_upcaster_is_raised_after_the_records_before_it(tmp_path: Path) -> None:
    """Any decode failure (here an upcaster's bug), not only an unknown tag, waits its turn."""
    path = tmp_path / "log"
    _log(path, 3, 0)

    def broken(raw: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("upcaster bug")

    seqs: list[int] = []

    async def main() -> None:
        with trio.fail_after(60):
            follower = eventlog.follow(path, Ev, poll_interval=0.1, upcasters={"t.newer": broken})
            async for record in follower:
                seqs.append(record.seq)  # noqa: PERF401 (kept when it raises)

    with pytest.raises(ValueError, match="upcaster bug"):
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert seqs == [1, 2, 3]
