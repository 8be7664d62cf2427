"""Event and state types shared by the eventlog tests, hypothesis strategies for them, and
:func:`refuse_to_open` (a file this user may not read, also used by the command tests)."""

from __future__ import annotations

import errno
import os
from typing import Any

import msgspec
import pytest
from hypothesis import strategies as st


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, path: str | os.PathLike[str]) -> None:
    """``os.open(path)`` fails as it does on a file without read permission (EACCES): the
    tests run as root, who may read anything, so the refusal is faked."""
    real_open = os.open
    refused = os.fspath(path)

    def open_or_refuse(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.fspath(file) == refused:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), refused)
        return real_open(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", open_or_refuse)


class Started(msgspec.Struct, frozen=True, tag="t.started"):
    """A test event: something named started."""

    name: str
    at: float


class Progressed(msgspec.Struct, frozen=True, tag="t.progressed"):
    """A test event: progress of something named."""

    name: str
    value: int


class Noted(msgspec.Struct, frozen=True, tag="t.noted"):
    """A test event carrying free text and bytes."""

    text: str
    data: bytes = b""


Ev = Started | Progressed | Noted


class Tally(msgspec.Struct, frozen=True):
    """A test state: per-name progress sum and a count of events."""

    sums: dict[str, int] = msgspec.field(default_factory=dict)
    count: int = 0


def apply_tally(state: Tally, event: Ev) -> Tally:
    """A pure fold step over the test events."""
    sums = state.sums
    if isinstance(event, Progressed):
        sums = {**sums, event.name: sums.get(event.name, 0) + event.value}
    elif isinstance(event, Started):
        sums = {**sums, event.name: sums.get(event.name, 0)}
    return Tally(sums, state.count + 1)


names = st.sampled_from(["a", "b", "job-1", "ж"])
events = st.one_of(
    st.builds(Started, names, st.floats(allow_nan=False, allow_infinity=False)),
    st.builds(Progressed, names, st.integers(-(2**63), 2**63 - 1)),
    st.builds(Noted, st.text(max_size=40), st.binary(max_size=40)),
)
event_lists = st.lists(events, max_size=30)
# Values small enough that a Tally's sums stay within msgpack's 64-bit integers (snapshots).
summable_event_lists = st.lists(
    st.one_of(
        st.builds(Started, names, st.floats(allow_nan=False, allow_infinity=False)),
        st.builds(Progressed, names, st.integers(-(2**57), 2**57)),
        st.builds(Noted, st.text(max_size=40), st.binary(max_size=40)),
    ),
    max_size=30,
)
