"""``service.resume``: which jobs changed after a seq, from the records since the start and,
for a seq before it, from the log file itself (as ``serve`` reads it back)."""

from __future__ import annotations

import functools
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as hs

import eventlog
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.service import resume
from conjure_actors.service.resume import JobChanges, stamp


def accepted(job_id: str) -> se.ApiJobAccepted:
    return se.ApiJobAccepted(job_id=job_id, expires_at=1.0, at=0.0)


def moved(job_id: str) -> se.ApiJobExpiryMoved:
    return se.ApiJobExpiryMoved(job_id=job_id, expires_at=2.0, at=0.0)


def since_start(changes: JobChanges, seq: int, events: list[Any]) -> None:
    changes.on_records(
        [SimpleNamespace(seq=seq + n, event=event) for n, event in enumerate(events, 1)]
    )


async def test_a_seq_before_the_start_is_answered_from_the_log_file(tmp_path: Path) -> None:
    path = tmp_path / "serve.log"
    with eventlog.open_writer(path, Event) as writer:
        for event in (accepted("a"), accepted("b"), moved("a"), accepted("c")):
            writer.append(event)  # seqs 1..4
    changes = JobChanges(functools.partial(eventlog.read, path, Event))
    changes.started = changes.known_from = 4
    since_start(changes, 4, [accepted("d")])
    assert await changes.since(1) == {"b", "c", "d"}  # a's expiry moved: no change sent
    assert await changes.since(4) == {"d"}
    assert await changes.since(5) == set()


async def test_a_log_that_cannot_be_read_back_gets_the_full_snapshot(tmp_path: Path) -> None:
    changes = JobChanges(functools.partial(eventlog.read, tmp_path / "gone.log", Event))
    changes.started = changes.known_from = 10
    assert await changes.since(3) is None
    assert await JobChanges(None).since(0) == set()


async def test_an_expired_job_is_forgotten() -> None:
    changes = JobChanges()
    since_start(changes, 0, [accepted("a"), accepted("b"), se.ApiJobExpired(job_id="a", at=0.0)])
    assert await changes.since(0) == {"b"}
    assert list(changes.last) == ["b"]


@given(frames=hs.integers(0, 5), before=hs.integers(0, 100), step=hs.integers(0, 100))
def test_stamped_ids_never_go_back_and_the_last_is_the_new_seq(
    frames: int, before: int, step: int
) -> None:
    out = stamp([{"event": "x"} for _ in range(frames)], before, before + step, "ab12cd34")
    assert all(frame["id"].endswith("-ab12cd34") for frame in out)
    ids = [int(frame["id"].partition("-")[0]) for frame in out]
    assert ids == sorted(ids)
    assert ids[-1:] == ([before + step] if frames else [])


@pytest.mark.parametrize("window", [2, 3])
async def test_a_seq_more_than_the_window_before_the_start_is_not_known(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, window: int
) -> None:
    path = tmp_path / "serve.log"
    with eventlog.open_writer(path, Event) as writer:
        for job_id in "abcd":
            writer.append(accepted(job_id))
    monkeypatch.setattr(resume, "RESUME_WINDOW", window)
    changes = JobChanges(functools.partial(eventlog.read, path, Event))
    changes.started = changes.known_from = 4
    assert await changes.since(1) == ({"b", "c", "d"} if window == 3 else None)


async def test_a_record_applied_while_the_log_is_read_back_is_in_the_answer() -> None:
    """The read runs in a thread: a job that ends meanwhile must be in the answer (the
    stream that asked takes only the records past the log's end as it reads it after)."""
    changes = JobChanges()

    def history(start_seq: int, stop_seq: int) -> list[Any]:
        trio.from_thread.run_sync(since_start, changes, 4, [accepted("late")])
        return [SimpleNamespace(seq=2, event=accepted("b"))]

    changes.history = history
    changes.started = changes.known_from = 4
    assert await changes.since(1) == {"b", "late"}
