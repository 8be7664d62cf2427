"""Snapshots written by the journal every N events, and replay from the nearest one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import msgspec
import pytest
import trio
from eventlog_testtypes import Ev, Progressed, Tally, apply_tally

import eventlog
from eventlog.snapshot import list_snapshots, prune_snapshots, snapshot_file, snapshots_dir


async def append_in_tens(log: Path, count: int, every: int = 100) -> eventlog.JournalStatistics:
    """``count`` events through a snapshotting journal, ten per append_many."""
    with trio.fail_after(30):
        async with eventlog.open_journal(
            log, Ev, apply=apply_tally, initial=Tally(), snapshot_every=every
        ) as journal:
            for i in range(0, count, 10):
                await journal.append_many([Progressed("a", v) for v in range(i, i + 10)])
        # Leaving open_journal waits for the snapshots taken so far to be written.
        return journal.statistics()


def fold_to(log: Path, seq: int) -> Tally:
    """The state a full fold gives after record ``seq``."""
    return eventlog.fold(eventlog.read(log, Ev, stop_seq=seq), apply_tally, Tally())


async def test_journal_writes_a_snapshot_every_n_events(tmp_path: Path) -> None:
    """With snapshot_every=100, 350 events leave snapshots at 100, 200 and 300, each right."""
    log = tmp_path / "log"
    stats = await append_in_tens(log, 350)
    assert stats.snapshot_error is None
    assert stats.snapshots == 3
    directory = snapshots_dir(log)
    assert list_snapshots(directory, Tally) == [100, 200, 300]
    for seq in (100, 200, 300):
        assert eventlog.read_snapshot(snapshot_file(directory, seq, Tally), Tally) == (
            seq,
            fold_to(log, seq),
        )


async def test_keep_snapshots_deletes_all_but_the_newest(tmp_path: Path) -> None:
    """keep_snapshots=2: after 550 events only the snapshots at 400 and 500 remain."""
    log = tmp_path / "log"
    with trio.fail_after(30):
        async with eventlog.open_journal(
            log, Ev, apply=apply_tally, initial=Tally(), snapshot_every=100, keep_snapshots=2
        ) as journal:
            for i in range(0, 550, 10):
                await journal.append_many([Progressed("a", v) for v in range(i, i + 10)])
    assert journal.statistics().snapshots == 5
    assert list_snapshots(snapshots_dir(log), Tally) == [400, 500]
    assert sorted(os.listdir(snapshots_dir(log))) == [
        os.path.basename(snapshot_file(snapshots_dir(log), seq, Tally)) for seq in (400, 500)
    ]


def test_prune_snapshots_leaves_other_state_types(tmp_path: Path) -> None:
    """prune_snapshots deletes only old snapshots of its own state type."""
    for seq in (1, 2, 3):
        eventlog.write_snapshot(snapshot_file(tmp_path, seq, Tally), Tally(), seq, Tally)
    eventlog.write_snapshot(snapshot_file(tmp_path, 1, TallyV2), TallyV2(), 1, TallyV2)
    assert prune_snapshots(tmp_path, Tally, 1) == [1, 2]
    assert list_snapshots(tmp_path, Tally) == [3]
    assert list_snapshots(tmp_path, TallyV2) == [1]


@pytest.mark.parametrize("stop", [5, 99, 100, 250, 350, 1000])
async def test_replay_starts_from_the_nearest_snapshot_at_or_before_stop(
    tmp_path: Path, stop: int
) -> None:
    """replay(stop_seq, snapshot_dir) uses the newest snapshot <= stop and equals a full fold."""
    log = tmp_path / "log"
    await append_in_tens(log, 350)
    result = eventlog.replay(
        log,
        Ev,
        apply_tally,
        Tally(),
        snapshot_dir=snapshots_dir(log),
        state_type=Tally,
        stop_seq=stop,
    )
    assert result.state == fold_to(log, stop)
    assert result.last_seq == min(stop, 350)
    nearest = [s for s in (100, 200, 300) if s <= stop]
    assert result.used_snapshot_seq == (nearest[-1] if nearest else None)


async def test_damaged_newest_snapshot_falls_back_to_an_older_one(tmp_path: Path) -> None:
    """A damaged snapshot is skipped for the next older one, and the reason is kept."""
    log = tmp_path / "log"
    await append_in_tens(log, 350)
    damaged = trio.Path(snapshot_file(snapshots_dir(log), 300, Tally))
    raw = bytearray(await damaged.read_bytes())
    raw[-1] ^= 0xFF
    await damaged.write_bytes(bytes(raw))
    result = eventlog.replay(
        log, Ev, apply_tally, Tally(), snapshot_dir=snapshots_dir(log), state_type=Tally
    )
    assert result.used_snapshot_seq == 200
    assert result.state == fold_to(log, 350)
    assert "checksum" in (result.snapshot_error or "")


async def test_snapshot_of_a_rewritten_log_is_not_used(tmp_path: Path) -> None:
    """Snapshots left by another log of the same name (other record ts) are mismatched."""
    log = tmp_path / "log"
    await append_in_tens(log, 350)
    os.unlink(log)
    with eventlog.open_writer(log, Ev) as w:
        w.append_many([Progressed("b", 1)] * 300)
    result = eventlog.replay(
        log, Ev, apply_tally, Tally(), snapshot_dir=snapshots_dir(log), state_type=Tally
    )
    assert result.used_snapshot_seq is None
    assert result.state == fold_to(log, 300)


async def test_reopened_journal_starts_from_the_newest_snapshot(tmp_path: Path) -> None:
    """A journal reopened with snapshot_every folds only the records after the last snapshot."""
    log = tmp_path / "log"
    await append_in_tens(log, 350)
    applied: list[Any] = []

    def counting(state: Tally, event: Any) -> Tally:
        applied.append(event)
        return apply_tally(state, event)

    with trio.fail_after(30):
        async with eventlog.open_journal(
            log, Ev, apply=counting, initial=Tally(), snapshot_every=100
        ) as journal:
            assert journal.state == fold_to(log, 350)
            assert len(applied) == 50


async def test_unencodable_state_stops_snapshots_and_the_journal_goes_on(tmp_path: Path) -> None:
    """A state msgspec cannot encode is reported in statistics; appends still succeed."""

    class Opaque:
        """Not encodable by msgspec."""

    def keep(state: Any, event: Any) -> Any:
        return state

    with trio.fail_after(30):
        async with eventlog.open_journal(
            tmp_path / "log", Ev, apply=keep, initial=Opaque(), snapshot_every=2
        ) as journal:
            for i in range(5):
                await journal.append(Progressed("a", i))
            stats = journal.statistics()
    assert stats.last_seq == 5
    assert stats.snapshots == 0
    assert "cannot be encoded" in (stats.snapshot_error or "")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"snapshot_every": 0}, "at least 1"),
        ({"snapshot_every": 10, "apply": None}, "needs apply"),
        ({"snapshot_every": 10, "keep_snapshots": 0}, "keep_snapshots"),
    ],
)
async def test_bad_snapshot_settings_are_refused(
    tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    """snapshot_every must be positive and comes with apply."""
    options: dict[str, Any] = {"apply": apply_tally, "initial": Tally(), **kwargs}
    with pytest.raises(ValueError, match=message):
        async with eventlog.open_journal(tmp_path / "log", Ev, **options):
            pass


async def test_snapshot_every_needs_a_log_file() -> None:
    """A MemoryLog has nowhere to put snapshots: refused with a clear error."""
    with pytest.raises(ValueError, match="log file"):
        async with eventlog.open_journal(
            eventlog.MemoryLog(Ev), Ev, apply=apply_tally, initial=Tally(), snapshot_every=10
        ):
            pass


class TallyV2(msgspec.Struct, frozen=True):
    """The test state after a schema change: one more field."""

    sums: dict[str, int] = msgspec.field(default_factory=dict)
    count: int = 0
    names: list[str] = msgspec.field(default_factory=list)


async def test_snapshots_of_another_state_type_are_not_seen(tmp_path: Path) -> None:
    """After the state type changes, the old snapshots are ignored: a full fold, not a
    state decoded from the old shape."""
    log = tmp_path / "log"
    await append_in_tens(log, 350)
    assert list_snapshots(snapshots_dir(log), TallyV2) == []

    def apply_v2(state: TallyV2, event: Any) -> TallyV2:
        tally = apply_tally(Tally(state.sums, state.count), event)
        return TallyV2(tally.sums, tally.count, [*state.names, type(event).__name__])

    result = eventlog.replay(
        log, Ev, apply_v2, TallyV2(), snapshot_dir=snapshots_dir(log), state_type=TallyV2
    )
    assert result.used_snapshot_seq is None
    assert len(result.state.names) == 350
