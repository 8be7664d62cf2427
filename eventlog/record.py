"""``Record``: one event as the log stores it, with its seq and the wall time of its append."""

from __future__ import annotations

from typing import Generic, TypeVar

import msgspec

E = TypeVar("E")


class Record(msgspec.Struct, Generic[E], frozen=True, gc=False):
    """One logged event: ``seq`` (contiguous from 1), ``ts`` (wall time of the append)."""

    seq: int
    ts: float
    event: E
