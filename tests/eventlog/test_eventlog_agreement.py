"""The file log and the memory log, driven by the same random operations, must agree."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest
from eventlog_testtypes import Ev, event_lists, events
from hypothesis import settings, stateful

import eventlog


class BackendsAgree(stateful.RuleBasedStateMachine):
    """Appends, batches, flushes and reopens applied to both backends give the same log."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.TemporaryDirectory()
        self.path = Path(self.dir.name) / "log"
        self.file: Any = eventlog.open_writer(self.path, Ev, sync="batch", max_batch=4)
        self.memory: Any = eventlog.MemoryLog(Ev, sync="batch", max_batch=4)
        self.clock = 0.0

    def stamp(self) -> list[float]:
        self.clock += 1.0
        return [self.clock]

    @stateful.rule(event=events)
    def append(self, event: Ev) -> None:
        ts = self.stamp()
        a = self.file.append_many([event], ts=ts)
        b = self.memory.append_many([event], ts=ts)
        assert a == b

    @stateful.rule(evs=event_lists)
    def append_many(self, evs: list[Ev]) -> None:
        ts = [self.stamp()[0] for _ in evs]
        assert self.file.append_many(evs, ts=ts) == self.memory.append_many(evs, ts=ts)

    @stateful.rule()
    def flush(self) -> None:
        self.file.flush()
        self.memory.flush()

    @stateful.rule()
    def reopen(self) -> None:
        self.file.close()
        self.memory.close()
        self.file = eventlog.open_writer(self.path, Ev, sync="batch", max_batch=4)
        self.memory = self.memory.reopen()

    @stateful.invariant()
    def same_last_seq(self) -> None:
        assert self.file.last_seq == self.memory.last_seq

    def teardown(self) -> None:
        self.file.close()
        self.memory.close()
        assert list(eventlog.read(self.path, Ev)) == list(self.memory.records())
        self.dir.cleanup()


# The slow twins' examples: 100, or the loaded profile's count if more (`just fuzz`).
_MANY = max(100, settings.default.max_examples)


# Each example fsyncs (sync="batch") at every flush and reopen: the inner loop runs 10
# examples, the slow tests _MANY.
BackendsAgree.TestCase.settings = settings(max_examples=10, deadline=None)
TestBackendsAgree = BackendsAgree.TestCase


@pytest.mark.slow
class TestBackendsAgreeOverManyExamples(BackendsAgree.TestCase):
    """The same state machine as TestBackendsAgree, over many more runs."""

    settings = settings(max_examples=_MANY, deadline=None)
