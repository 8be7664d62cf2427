"""One writer contract, run against every backend (file log and memory log)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from eventlog_testtypes import Ev, Noted, Progressed, Started, event_lists
from hypothesis import HealthCheck, given, settings

import eventlog


class StoreContract:
    """The behaviour every EventStore backend must share; subclasses say how to make one."""

    @pytest.fixture(autouse=True)
    def _tmp(self, tmp_path: Path) -> None:
        self.tmp = tmp_path
        self.counter = 0

    def make(self, sync: eventlog.SyncPolicy = "batch", **kw: Any) -> Any:
        raise NotImplementedError

    def reopen(self, store: Any) -> Any:
        raise NotImplementedError

    def records(self, store: Any) -> list[eventlog.Record[Any]]:
        raise NotImplementedError

    def test_appends_get_contiguous_seqs_from_one(self) -> None:
        """append and append_many number records 1, 2, 3... in call order."""
        with self.make() as store:
            first = store.append(Started("a", 1.0))
            more = store.append_many([Progressed("a", 1), Noted("n")])
            assert [first.seq, *(r.seq for r in more)] == [1, 2, 3]
            assert store.last_seq == 3

    def test_records_read_back_equal_what_append_returned(self) -> None:
        """What append returned is exactly what is read back after close."""
        with self.make(sync="none") as store:
            returned = [store.append(Started("a", 1.0)), *store.append_many([Noted("x", b"y")])]
        assert self.records(store) == returned

    def test_reopen_continues_the_sequence(self) -> None:
        """After close and reopen, seqs continue where they stopped."""
        store = self.make()
        store.append_many([Noted("1"), Noted("2")])
        store.close()
        again = self.reopen(store)
        assert again.last_seq == 2
        assert again.append(Noted("3")).seq == 3
        again.close()
        assert [r.seq for r in self.records(again)] == [1, 2, 3]

    def test_ts_comes_from_the_clock(self) -> None:
        """Each record's ts is the clock's value at append time (or the given ts)."""
        with self.make(clock=lambda: 42.5) as store:
            assert store.append(Noted("x")).ts == 42.5
            assert [r.ts for r in store.append_many([Noted("y")], ts=[7.0])] == [7.0]

    def test_append_many_is_all_or_nothing(self) -> None:
        """One bad event in append_many leaves nothing appended."""
        with self.make() as store:
            with pytest.raises(TypeError):
                store.append_many([Noted("ok"), object()])
            assert store.last_seq == 0
            assert store.append(Noted("next")).seq == 1

    def test_closed_store_refuses_appends(self) -> None:
        """After close(), append raises LogClosedError."""
        store = self.make()
        store.close()
        with pytest.raises(eventlog.LogClosedError):
            store.append(Noted("x"))

    def test_mismatched_timestamps_are_refused(self) -> None:
        """append_many with a ts list of the wrong length raises ValueError."""
        with self.make() as store, pytest.raises(ValueError, match="timestamps"):
            store.append_many([Noted("x")], ts=[1.0, 2.0])

    def test_unknown_sync_policy_is_refused(self) -> None:
        """A sync policy outside always/batch/none is a ValueError naming the choices."""
        with pytest.raises(ValueError, match="always, batch, none"):
            self.make(sync="sometimes")

    # Each subclass is its own executor of this one test: safe, since every example opens a
    # fresh store.
    @settings(suppress_health_check=[HealthCheck.differing_executors])
    @given(evs=event_lists)
    def test_any_events_round_trip(self, evs: list[Ev]) -> None:
        """Any event sequence comes back unchanged, under every policy."""
        for sync in ("always", "batch", "none"):
            with self.make(sync=sync) as store:
                store.append_many(evs)
            assert [r.event for r in self.records(store)] == evs


class TestFileLogContract(StoreContract):
    """The contract on the file backend (open_writer)."""

    def make(self, sync: eventlog.SyncPolicy = "batch", **kw: Any) -> Any:
        self.counter += 1
        return eventlog.open_writer(self.tmp / f"log{self.counter}", Ev, sync=sync, **kw)

    def reopen(self, store: Any) -> Any:
        return eventlog.open_writer(store.path, Ev, sync=store.sync)

    def records(self, store: Any) -> list[eventlog.Record[Any]]:
        return list(eventlog.read(store.path, Ev))


class TestMemoryLogContract(StoreContract):
    """The contract on the in-memory backend (MemoryLog)."""

    def make(self, sync: eventlog.SyncPolicy = "batch", **kw: Any) -> Any:
        return eventlog.MemoryLog(Ev, sync=sync, **kw)

    def reopen(self, store: Any) -> Any:
        return store.reopen()

    def records(self, store: Any) -> list[eventlog.Record[Any]]:
        return list(store.records())


@pytest.fixture
def memlog() -> eventlog.MemoryLog[Any]:
    """A batch-policy memory log with a small batch size."""
    return eventlog.MemoryLog(Ev, sync="batch", max_batch=3)


def test_memory_log_crash_drops_what_was_not_durable(memlog: eventlog.MemoryLog[Any]) -> None:
    """crash() keeps the flushed records and loses the rest, like a killed process."""
    memlog.append_many([Noted("1"), Noted("2"), Noted("3")])  # max_batch reached: durable
    memlog.append(Noted("4"))
    assert memlog.crash() == 1
    again = memlog.reopen()
    assert [r.event for r in again.records()] == [Noted("1"), Noted("2"), Noted("3")]
    assert again.append(Noted("4b")).seq == 4


def test_memory_log_always_policy_is_durable_at_once() -> None:
    """Under sync="always" nothing is lost by a crash."""
    log = eventlog.MemoryLog(Ev, sync="always")
    log.append(Noted("1"))
    assert log.crash() == 0
