"""``run --resume`` of a log whose snapshots an older version wrote, before the state kept a
machine's ``launch_duration``: such a snapshot is not used (its file name carries the
fingerprint of the state type that wrote it), so a machine lost before the log saw it Ready
is billed its launch's lease, not the configured one; the fold from the log's start is said
in one line when it is long, and happens once (the journal writes a snapshot at open)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import msgspec
import pytest

import eventlog
from conjure_actors.commands import run
from conjure_actors.commands.run import _open_run_journal, read_log
from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy
from conjure_actors.domain.state import State, apply, initial_state, state_to_builtins
from eventlog.snapshot import snapshot_file, write_snapshot_payload

OLD_FINGERPRINT = "6c76454e40f094d7"
"""The fingerprint of the state type before ``Machine.launch_duration`` was added: the name
its snapshots were written under."""

T0 = 1_800_000_000.0


def _events(filler: int) -> list[Any]:
    return [
        ev.SystemStarted(run_id="r", version="0", mode="runcomfy", at=T0),
        ev.MachineLaunchRequested(
            request_key="k1",
            server_type="medium",
            workflow_version="v",
            estimated_duration=600,
            at=T0,
        ),
        ev.MachineLaunched(request_key="k1", server_id="s1", at=T0 + 1),
        *(ev.BudgetSet(limit_micros=i, at=T0 + 2) for i in range(filler)),
    ]


def _log_with_an_old_snapshot(path: Path, filler: int = 5) -> bytes:
    """The log, and a snapshot at its last seq as the older version wrote it (no
    launch_duration, nor the options the state keeps since); returns its payload."""
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(_events(filler))
    state = initial_state()
    for record in eventlog.read(path, ev.Event):
        apply(state, record.event)
    old = state_to_builtins(state)
    for machine in old["machines"].values():
        del machine["launch_duration"]
    for key in ("out_dir", "server_type", "max_machines", "idle_timeout"):
        del old["system"][key]
    payload = msgspec.msgpack.encode(old)
    directory = Path(eventlog.snapshots_dir(path))
    directory.mkdir()
    name = directory / f"{record.seq:012d}.{OLD_FINGERPRINT}.snapshot"
    write_snapshot_payload(name, payload, record.seq, State, last_ts=record.ts, validate=False)
    return payload


def test_a_snapshot_without_launch_duration_is_not_used(tmp_path: Path) -> None:
    """The state comes from the log: the machine's launch duration is its launch's 600 s."""
    log = tmp_path / "r.log"
    payload = _log_with_an_old_snapshot(log)
    # What that snapshot would have given, read as today's state: no launch duration.
    assert msgspec.msgpack.decode(payload, type=State).machines["s1"].launch_duration is None
    logged = read_log(log)
    assert logged.used_snapshot_seq is None
    machine = logged.state.machines["s1"]
    assert machine.launch_duration == 600
    seconds = machines_policy.unseen_ready_seconds(machine, T0 + 4000, lease_seconds=3600)
    assert seconds == 600  # not the configured lease (3600 s)


def test_a_long_fold_past_old_snapshots_is_said_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only when it costs time (SLOW_FOLD records or more): one line naming why."""
    log = tmp_path / "r.log"
    _log_with_an_old_snapshot(log, filler=20)
    said: list[str] = []
    read_log(log, said.append)
    assert said == []  # 23 records: nothing worth a line
    monkeypatch.setattr(run, "SLOW_FOLD", 20)
    read_log(log, said.append)
    assert said == [
        f"note: the snapshots of {log} are of another version of conjure_actors: its 23"
        " records are folded from its start (the resume writes a snapshot of this version once it"
        " has opened the log)"
    ]


async def test_the_resumed_journal_writes_a_snapshot_of_this_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once folded, the journal writes a snapshot of today's state: the next resume uses it."""
    monkeypatch.setattr(run, "SNAPSHOT_EVERY", 10)
    log = tmp_path / "r.log"
    _log_with_an_old_snapshot(log, filler=20)
    logged = read_log(log)
    async with _open_run_journal(log, time.time, fresh=False, logged=logged):
        pass
    again = read_log(log)
    assert again.used_snapshot_seq == logged.last_seq
    assert again.state.machines["s1"].launch_duration == 600


def test_a_snapshot_of_this_version_past_the_log_s_end_is_not_said_another_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A snapshot of this version at a seq the log no longer reaches (the log cut or
    replaced) is not used, but it is not another version's: no line saying so."""
    log = tmp_path / "r.log"
    with eventlog.open_writer(log, ev.Event, sync="none") as writer:
        writer.append_many(_events(20))
    state = initial_state()
    for record in eventlog.read(log, ev.Event):
        apply(state, record.event)
    directory = Path(eventlog.snapshots_dir(log))
    directory.mkdir()
    past = record.seq + 100
    eventlog.write_snapshot(snapshot_file(directory, past, State), state, past, State)
    monkeypatch.setattr(run, "SLOW_FOLD", 20)
    said: list[str] = []
    assert read_log(log, said.append).used_snapshot_seq is None
    assert said == []
