"""The event vocabulary: stable tags, the union, and round-trips through the log codec."""

from __future__ import annotations

import tempfile
from pathlib import Path

import msgspec
import pytest
from domain_strategies import event_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

import eventlog
from conjure_actors.domain import events as ev

# Tags are written into logs: changing one breaks every old log. This list is the contract.
EXPECTED_TAGS = {
    "workflow.registered",
    "job.submitted",
    "job.queued",
    "job.started",
    "job.retrying",
    "job.succeeded",
    "job.failed",
    "job.cancelled",
    "job.interrupted",
    "job.resumed",
    "job.stalled",
    "machine.launch_requested",
    "machine.launched",
    "machine.launch_failed",
    "machine.status_observed",
    "machine.unknown_listed",
    "machine.ready",
    "machine.healthy",
    "machine.unhealthy",
    "machine.leased",
    "machine.released",
    "machine.lease_renewed",
    "machine.stopping",
    "machine.draining",
    "machine.stopped",
    "machine.stopped_again",
    "machine.lost",
    "machine.late_prompt_stopped",
    "machine.adopted",
    "machine.attached",
    "exec.input_uploaded",
    "exec.prompt_submitting",
    "exec.prompt_submitted",
    "exec.prompt_rejected",
    "exec.started",
    "exec.node_cached",
    "exec.node_started",
    "exec.node_progress",
    "exec.node_executed",
    "exec.succeeded",
    "exec.interrupted",
    "exec.failed",
    "exec.output_saved",
    "cost.accrued",
    "cost.budget_set",
    "cost.budget_warning",
    "cost.budget_exceeded",
    "cost.launch_refused",
    "cost.budget_limit_reached",
    "system.started",
    "system.stopped",
    "actor.started",
    "actor.crashed",
    "actor.restarted",
    "actor.stopped",
    "actor.escalated",
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
}


def test_tags_are_the_stable_contract() -> None:
    """Every event class has exactly the tag the log format promises."""
    assert set(ev.TAGS) == EXPECTED_TAGS
    assert len(ev.TAGS) == len(ev.EVENT_TYPES)


def test_union_holds_every_event_type() -> None:
    """The Event union, EVENT_TYPES and __all__ name the same classes."""
    union_members = set(ev.Event.__args__)
    assert union_members == set(ev.EVENT_TYPES)
    domain_names = {cls.__name__ for cls in ev.DOMAIN_EVENTS}
    assert domain_names <= set(ev.__all__)


def test_events_are_frozen() -> None:
    """An event cannot be mutated after it is made."""
    event = ev.JobQueued(job_id="j", at=1.0)
    with pytest.raises(AttributeError):
        event.job_id = "k"  # type: ignore[misc]


def test_every_event_has_a_wall_time() -> None:
    """Every event carries ``at`` so apply never reads a clock."""
    for cls in ev.EVENT_TYPES:
        names = {f.name for f in msgspec.structs.fields(cls)}
        assert "at" in names, cls.__name__


# Each example draws one event of every type (generation is nearly all the cost): the inner
# loop runs a few examples, the slow tests many.
@pytest.mark.slow
@settings(max_examples=5)
@given(st.data())
def test_every_event_type_round_trips_through_msgpack(data: st.DataObject) -> None:
    """Encoding then decoding through the typed union gives the same event."""
    _check_msgpack_round_trip(data)


@pytest.mark.slow
@settings(max_examples=100)
@given(st.data())
def test_every_event_type_round_trips_through_msgpack_over_many_examples(
    data: st.DataObject,
) -> None:
    """The same property as above, over many more generated events."""
    _check_msgpack_round_trip(data)


def _check_msgpack_round_trip(data: st.DataObject) -> None:
    decoder = msgspec.msgpack.Decoder(ev.Event)
    for cls in ev.EVENT_TYPES:
        event = data.draw(event_strategy(cls))
        assert decoder.decode(msgspec.msgpack.encode(event)) == event


@pytest.mark.slow
@settings(max_examples=4)
@given(st.data())
def test_every_event_type_round_trips_through_the_log(data: st.DataObject) -> None:
    """One event of every type, written with eventlog and read back, is unchanged."""
    _check_log_round_trip(data)


@pytest.mark.slow
@settings(max_examples=50)
@given(st.data())
def test_every_event_type_round_trips_through_the_log_over_many_examples(
    data: st.DataObject,
) -> None:
    """The same property as above, over many more generated events."""
    _check_log_round_trip(data)


def _check_log_round_trip(data: st.DataObject) -> None:
    events = [data.draw(event_strategy(cls)) for cls in ev.EVENT_TYPES]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "all.log"
        with eventlog.open_writer(path, ev.Event, sync="none") as writer:
            writer.append_many(events)
        back = [record.event for record in eventlog.read(path, ev.Event)]
    assert back == events
    assert [type(e) for e in back] == list(ev.EVENT_TYPES)


def test_json_wire_form_carries_the_tag_as_type() -> None:
    """The tag is the ``type`` field on the wire (JSON lines, monitor output)."""
    event = ev.NodeProgress(job_id="j", prompt_id="p", node_id="5", value=1, max=20, at=2.0)
    assert msgspec.json.decode(msgspec.json.encode(event))["type"] == "exec.node_progress"
