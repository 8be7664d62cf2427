"""Properties of the service's part of the fold (``State.service``): ``apply`` is total on
any sequence of service events, the blob reference counts always equal the live assets per
hash, a job's outputs only name live assets, and a replay of the logged events rebuilds
the same state."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import eventlog
from conjure_actors.domain import service_events as se
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import apply, initial_state, state_to_builtins

IDS = st.sampled_from(["a1", "a2", "a3", "a4"])
JOBS = st.sampled_from(["j1", "j2"])
HASHES = st.sampled_from(["blake3:" + c * 64 for c in "123"])
KEYS = st.sampled_from(["k1", "k2"])
TIMES = st.floats(min_value=0, max_value=1e6, allow_nan=False)

recorded = st.builds(
    se.AssetRecorded,
    asset_id=IDS,
    hash=HASHES,
    size=st.integers(0, 100),
    content_type=st.just("image/png"),
    file_path=st.none() | st.sampled_from(["a.png", "b.png"]),
    job_id=st.none() | JOBS,
    source_path=st.none() | st.sampled_from(["/o/1.png", "/o/2.png"]),
    expires_at=st.none() | TIMES,
    at=TIMES,
)
service_events = st.one_of(
    recorded,
    st.builds(se.AssetDeleted, asset_id=IDS, at=TIMES),
    st.builds(se.AssetExpired, asset_id=IDS, at=TIMES),
    st.builds(
        se.IdempotencyKeyClaimed, key=KEYS, scope=st.just("jobs"), expires_at=TIMES, at=TIMES
    ),
    st.builds(
        se.IdempotencyKeyReleased, key=KEYS, scope=st.just("jobs"), reason=st.just("x"), at=TIMES
    ),
    st.builds(
        se.ApiJobAccepted,
        job_id=JOBS,
        labels=st.dictionaries(st.sampled_from("ab"), st.sampled_from("xy")),
        expires_at=TIMES,
        at=TIMES,
    ),
    st.builds(se.ApiJobCancelRequested, job_id=JOBS, at=TIMES),
    st.builds(se.ApiJobExpired, job_id=JOBS, at=TIMES),
    st.builds(se.ApiJobExpiryMoved, job_id=JOBS, expires_at=TIMES, at=TIMES),
    st.builds(
        se.ApiJobOutputsNotStored,
        job_id=JOBS,
        paths=st.lists(st.sampled_from(["/o/1.png", "/o/2.png"]), max_size=2).map(tuple),
        reason=st.just("x"),
        at=TIMES,
    ),
)


def _check(state: Any) -> None:
    svc = state.service
    counts: dict[str, int] = {}
    for record in svc.assets.values():
        counts[record.hash] = counts.get(record.hash, 0) + 1
    assert svc.blob_refs == counts
    assert set(svc.blob_sizes) == set(counts)
    for outputs in svc.job_outputs.values():
        assert set(outputs.values()) <= set(svc.assets)


@given(events=st.lists(service_events, max_size=40))
def test_apply_is_total_and_keeps_blob_counts_exact(events: list[Any]) -> None:
    """Any sequence of service events applies without error; the counts stay exact."""
    state = initial_state()
    for event in events:
        apply(state, event)
        _check(state)


@pytest.mark.slow
@given(events=st.lists(service_events, max_size=25))
def test_events_round_trip_through_the_log(tmp_path_factory: Any, events: list[Any]) -> None:
    """Logged and read back, the service events fold to the same state as applied live."""
    live = initial_state()
    for event in events:
        apply(live, event)
    path = Path(tmp_path_factory.mktemp("log")) / "s.log"
    with eventlog.open_writer(path, Event, sync="none") as writer:
        writer.append_many(events)
    replayed = initial_state()
    for record in eventlog.read(path, Event):
        apply(replayed, record.event)
    assert state_to_builtins(replayed) == state_to_builtins(live)


def test_service_event_tags_are_stable() -> None:
    """The wire tags of the service's events never change (old logs must decode)."""
    tags = [cls.__struct_config__.tag for cls in se.SERVICE_EVENTS]
    assert tags == [
        "service.asset_recorded",
        "service.asset_deleted",
        "service.asset_expired",
        "service.idempotency_claimed",
        "service.idempotency_released",
        "service.job_accepted",
        "service.job_cancel_requested",
        "service.job_expired",
        "service.job_expiry_moved",
        "service.job_outputs_not_stored",
    ]
