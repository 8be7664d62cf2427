"""Snapshots and replay, schema evolution (upcasters), salvage and follow."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
import trio.testing
from eventlog_testtypes import (
    Ev,
    Noted,
    Progressed,
    Started,
    Tally,
    apply_tally,
    summable_event_lists,
)
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from eventlog._format import HEADER_SIZE


def write(path: Path, evs: list[Any], event_type: Any = Ev) -> None:
    """Write ``evs`` to a new log at ``path``."""
    with eventlog.open_writer(path, event_type, sync="none") as w:
        w.append_many(evs)


@pytest.mark.slow
@given(evs=summable_event_lists, data=st.data())
def test_snapshot_plus_tail_equals_full_replay(
    tmp_path_factory: pytest.TempPathFactory, evs: list[Ev], data: st.DataObject
) -> None:
    """State from a snapshot at any seq plus the records after it equals a full fold."""
    tmp = tmp_path_factory.mktemp("snap")
    log, snap = tmp / "log", tmp / "snap"
    write(log, evs)
    cut = data.draw(st.integers(0, len(evs)))
    records = list(eventlog.read(log, Ev))
    state = eventlog.fold(records[:cut], apply_tally, Tally())
    last_ts = records[cut - 1].ts if cut else None
    eventlog.write_snapshot(snap, state, cut, Tally, last_ts=last_ts)
    full = eventlog.replay(log, Ev, apply_tally, Tally())
    fast = eventlog.replay(log, Ev, apply_tally, Tally(), snapshot_path=snap, state_type=Tally)
    assert fast.state == full.state == eventlog.fold(records, apply_tally, Tally())
    assert fast.last_seq == full.last_seq == len(evs)
    assert fast.used_snapshot_seq == cut
    assert full.used_snapshot_seq is None


def test_snapshot_round_trips_and_is_mode_0600(tmp_path: Path) -> None:
    """read_snapshot returns what write_snapshot stored; a missing file is None."""
    snap = tmp_path / "snap"
    assert eventlog.read_snapshot(snap, Tally) is None
    eventlog.write_snapshot(snap, Tally({"a": 1}, 4), 4, Tally)
    assert eventlog.read_snapshot(snap, Tally) == (4, Tally({"a": 1}, 4))
    assert snap.stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_damaged_snapshot_falls_back_to_full_replay(tmp_path: Path, damage: str) -> None:
    """A damaged snapshot raises SnapshotError on read and replay does a full fold instead."""
    log, snap = tmp_path / "log", tmp_path / "snap"
    write(log, [Progressed("a", 1), Progressed("a", 2)])
    eventlog.write_snapshot(snap, Tally({"a": 1}, 1), 1, Tally)
    raw = bytearray(snap.read_bytes())
    if damage == "flip":
        raw[-1] ^= 0x10
    elif damage == "truncate":
        raw = raw[:10]
    else:
        raw = bytearray(b"not a snapshot at all, definitely not")
    snap.write_bytes(raw)
    with pytest.raises(eventlog.SnapshotError):
        eventlog.read_snapshot(snap, Tally)
    result = eventlog.replay(log, Ev, apply_tally, Tally(), snapshot_path=snap, state_type=Tally)
    assert result.state == Tally({"a": 3}, 2)
    assert result.used_snapshot_seq is None
    assert result.snapshot_error is not None


def test_snapshot_of_another_state_type_is_mismatched(tmp_path: Path) -> None:
    """A snapshot that does not decode as state_type is not used."""
    log, snap = tmp_path / "log", tmp_path / "snap"
    write(log, [Progressed("a", 1)])
    eventlog.write_snapshot(snap, [1, 2, 3], 1, list[int])
    with pytest.raises(eventlog.SnapshotError, match="decode"):
        eventlog.read_snapshot(snap, Tally)
    result = eventlog.replay(log, Ev, apply_tally, Tally(), snapshot_path=snap, state_type=Tally)
    assert (result.state, result.used_snapshot_seq) == (Tally({"a": 1}, 1), None)


def test_snapshot_of_another_log_is_mismatched(tmp_path: Path) -> None:
    """A snapshot past the log's end, or whose record ts differs, falls back to full replay."""
    log, snap = tmp_path / "log", tmp_path / "snap"
    write(log, [Progressed("a", 1), Progressed("a", 2)])
    eventlog.write_snapshot(snap, Tally({"a": 100}, 5), 5, Tally)
    result = eventlog.replay(log, Ev, apply_tally, Tally(), snapshot_path=snap, state_type=Tally)
    assert (result.state, result.used_snapshot_seq) == (Tally({"a": 3}, 2), None)
    assert "no record 5" in (result.snapshot_error or "")
    eventlog.write_snapshot(snap, Tally({"a": 100}, 1), 1, Tally, last_ts=-1.0)
    result = eventlog.replay(log, Ev, apply_tally, Tally(), snapshot_path=snap, state_type=Tally)
    assert (result.state, result.used_snapshot_seq) == (Tally({"a": 3}, 2), None)


def test_replay_stops_at_stop_seq_and_works_on_a_memory_log() -> None:
    """replay(stop_seq=k) on a MemoryLog folds records 1..k."""
    log = eventlog.MemoryLog(Ev)
    log.append_many([Progressed("a", 1), Progressed("a", 2), Progressed("a", 4)])
    result = eventlog.replay(log, Ev, apply_tally, Tally(), stop_seq=2)
    assert (result.state, result.last_seq) == (Tally({"a": 3}, 2), 2)


def test_unroundtrippable_state_is_refused_at_write(tmp_path: Path) -> None:
    """write_snapshot refuses a state that would not read back as state_type."""
    with pytest.raises(eventlog.SnapshotError, match="round-trip"):
        eventlog.write_snapshot(tmp_path / "snap", {"sums": "nope"}, 1, Tally)
    assert not (tmp_path / "snap").exists()


# -- schema evolution ----------------------------------------------------------------------


class OldSubmitted(msgspec.Struct, frozen=True, tag="job.submitted"):
    """Version 1 of an event as an old release wrote it."""

    job: str
    prio: str


class Submitted(msgspec.Struct, frozen=True, tag="job.submitted.v2"):
    """Version 2: ``prio`` became an int ``priority``, with a new tag."""

    job: str
    priority: int
    source: str = "cli"


class Cancelled(msgspec.Struct, frozen=True, tag="job.cancelled"):
    """An event that did not change."""

    job: str


NewEv = Submitted | Cancelled
OldEv = OldSubmitted | Cancelled


def upcast_submitted_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """job.submitted (v1) -> job.submitted.v2: map the priority word to a number."""
    return {
        "type": "job.submitted.v2",
        "job": raw["job"],
        "priority": {"low": 0, "high": 10}[raw["prio"]],
    }


def test_old_version_event_is_upcast_on_read(tmp_path: Path) -> None:
    """A v1 event in an old log reads back as the current v2 struct through the upcaster."""
    log = tmp_path / "log"
    write(log, [OldSubmitted("j1", "high"), Cancelled("j1")], OldEv)
    with eventlog.open_writer(log, NewEv) as w:  # the new code appends v2 events
        w.append(Submitted("j2", 3))
    upcasters = {"job.submitted": upcast_submitted_v1}
    events = [r.event for r in eventlog.read(log, NewEv, upcasters=upcasters)]
    assert events == [Submitted("j1", 10), Cancelled("j1"), Submitted("j2", 3)]


def test_unknown_tag_names_the_tag_and_seq(tmp_path: Path) -> None:
    """Without an upcaster, an event tag the union does not know is UnknownEventError."""
    log = tmp_path / "log"
    write(log, [Cancelled("j0"), OldSubmitted("j1", "low")], OldEv)
    with pytest.raises(eventlog.UnknownEventError, match=r"'job\.submitted'") as info:
        list(eventlog.read(log, NewEv))
    assert (info.value.tag, info.value.seq) == ("job.submitted", 2)
    assert "seq 2" in str(info.value)


def test_upcasters_chain_and_also_apply_in_replay(tmp_path: Path) -> None:
    """Upcasters chain (v0 -> v1 -> v2) and replay passes them through."""
    log = tmp_path / "log"

    class V0(msgspec.Struct, frozen=True, tag="job.submitted.v0"):
        name: str

    write(log, [V0("j0")], V0)
    upcasters = {
        "job.submitted.v0": lambda raw: {
            "type": "job.submitted",
            "job": raw["name"],
            "prio": "low",
        },
        "job.submitted": upcast_submitted_v1,
    }
    result = eventlog.replay(log, NewEv, lambda s, e: [*s, e], [], upcasters=upcasters)
    assert result.state == [Submitted("j0", 0)]


# -- salvage ---------------------------------------------------------------------------------


def test_salvage_copies_every_good_record_around_middle_damage(tmp_path: Path) -> None:
    """Damage in record 2 of 4: salvage copies 1, 3, 4 (keeping ts) and reports seq 2 lost."""
    src, dst = tmp_path / "src", tmp_path / "dst"
    evs: list[Ev] = [Noted("one"), Noted("two"), Noted("three"), Noted("four")]
    write(src, evs)
    originals = list(eventlog.read(src, Ev))
    raw = bytearray(src.read_bytes())
    second = HEADER_SIZE + (len(raw) - HEADER_SIZE) // 4
    raw[second + 30] ^= 0x01
    src.write_bytes(raw)
    with pytest.raises(eventlog.CorruptLogError):
        list(eventlog.read(src, Ev))
    report = eventlog.salvage(src, dst, Ev)
    copied = list(eventlog.read(dst, Ev))
    assert [r.event for r in copied] == [Noted("one"), Noted("three"), Noted("four")]
    assert [r.ts for r in copied] == [originals[i].ts for i in (0, 2, 3)]
    assert (report.copied, report.lost_seqs, report.last_source_seq) == (3, [2], 4)
    assert report.skipped == [(second, second - HEADER_SIZE)]
    assert src.read_bytes() == raw


def test_salvage_refuses_to_overwrite(tmp_path: Path) -> None:
    """The salvage destination must be a new path."""
    src = tmp_path / "src"
    write(src, [Noted("x")])
    with pytest.raises(eventlog.EventLogError, match="exists"):
        eventlog.salvage(src, src, Ev)


# -- follow ----------------------------------------------------------------------------------


async def test_follow_tails_a_growing_file(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """follow yields existing records from start_seq, then new ones as they are written."""
    log = tmp_path / "log"
    got: list[eventlog.Record[Any]] = []
    with trio.fail_after(60), eventlog.open_writer(log, Ev, sync="none") as w:
        w.append_many([Noted("a"), Noted("b")])
        w.flush()

        async def tail(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            async for record in eventlog.follow(log, Ev, start_seq=2, poll_interval=0.5):
                got.append(record)
                if len(got) == 3:
                    return

        async with trio.open_nursery() as nursery:
            await nursery.start(tail)
            await trio.sleep(1)
            w.append(Started("c", 1.0))
            w.flush()
            await trio.sleep(1)
            w.append(Progressed("d", 4))
            w.flush()
    assert [(r.seq, r.event) for r in got] == [
        (2, Noted("b")),
        (3, Started("c", 1.0)),
        (4, Progressed("d", 4)),
    ]


async def test_follow_waits_for_a_log_that_does_not_exist_yet(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """follow on a missing path polls until the log appears, and ignores a partial write."""
    log = tmp_path / "later"
    got: list[int] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:

            async def tail() -> None:
                async for record in eventlog.follow(log, Ev, poll_interval=0.25):
                    got.append(record.seq)
                    return

            nursery.start_soon(tail)
            await trio.sleep(2)
            with eventlog.open_writer(log, Ev, sync="none"):
                pass
            with log.open("ab") as f:
                f.write(b"\x00" * 5)  # a frame still being written
            await trio.sleep(1)
            assert got == []
            write(log, [Noted("x")])
    assert got == [1]


async def test_follow_raises_on_damage_in_the_middle(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A bad record with intact records after it is CorruptLogError, not an endless wait."""
    log = tmp_path / "log"
    write(log, [Noted("one"), Noted("two"), Noted("three")])
    raw = bytearray(log.read_bytes())
    raw[HEADER_SIZE + 2] ^= 0x40
    log.write_bytes(raw)
    with trio.fail_after(60), pytest.raises(eventlog.CorruptLogError):
        async for _ in eventlog.follow(log, Ev, poll_interval=0.1):
            pass


def test_nan_is_not_a_special_case_for_ts(tmp_path: Path) -> None:
    """A snapshot written without last_ts reads back with no ts check (NaN marker)."""
    snap = tmp_path / "snap"
    eventlog.write_snapshot(snap, Tally(), 0, Tally)
    assert eventlog.read_snapshot(snap, Tally) == (0, Tally())
    assert math.isnan(float("nan"))


def test_snapshot_of_a_state_msgpack_cannot_hold_is_refused(tmp_path: Path) -> None:
    """An integer beyond 64 bits is a clear SnapshotError, and no file is left behind."""
    snap = tmp_path / "s.snap"
    with pytest.raises(eventlog.SnapshotError, match="cannot be encoded"):
        eventlog.write_snapshot(snap, Tally({"a": 2**64}, 1), 1, Tally)
    assert list(tmp_path.iterdir()) == []
