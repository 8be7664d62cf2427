"""What a recovery makes of the account's servers the log does not know
(``unknown_servers``, ``unknown_server_line``), and which open launch intent a logged
machine whose launch record was lost answers (``launch_of``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.machines_policy import (
    GONE_STATUSES,
    Listed,
    UnknownServer,
    launch_of,
    unknown_server_line,
    unknown_servers,
)
from conjure_actors.domain.prices import default_price_table
from conjure_actors.domain.state import LaunchRequest, Machine, State, initial_state

NOW = 1_800_000_000.0
TABLE = default_price_table()


def _state(*machines: Machine, intents: tuple[LaunchRequest, ...] = ()) -> State:
    state = initial_state()
    for m in machines:
        state.machines[m.server_id] = m
    for req in intents:
        state.launch_requests[req.request_key] = req
    return state


def _intent(key: str, duration: int, at: float, version: str = "v1") -> LaunchRequest:
    return LaunchRequest(key, "medium", version, duration, 1, at)


def _ready(sid: str, duration: int = 3600, ready_at: float = NOW - 600) -> Listed:
    return Listed(
        server_id=sid,
        status="Ready",
        server_type="medium",
        workflow_version_id="v1",
        estimated_duration=duration,
        service_ready_at=ready_at,
        estimated_stopping_at=ready_at + duration,
    )


def test_a_ready_server_the_log_does_not_know_is_named_with_its_cost_so_far() -> None:
    """Ready for 600 s on a medium: that is what it cost so far (the price table's rate)."""
    (u,) = unknown_servers(_state(), [_ready("x")], now=NOW, table=TABLE)
    assert (u.server_id, u.status) == ("x", "Ready")
    assert u.cost_micros == TABLE.rate("medium") * 600 // 3600


def test_servers_of_the_log_on_their_way_out_or_of_an_open_intent_are_not_named() -> None:
    """The log's own machine (any status), a server Deleting (billing over) and one that
    echoes an open launch intent's marker (the listings that follow may adopt it) are not
    unknown; a Starting one is, unbilled yet."""
    # The intent logged before the server was Ready (one Ready before it is not its server).
    state = _state(
        Machine(server_id="ours", status="stopped"), intents=(_intent("k", 583, NOW - 900),)
    )
    listed = [
        _ready("ours"),
        Listed(server_id="going", status="Deleting", server_type="medium"),
        _ready("landing", duration=583),
        Listed(server_id="booting", status="Starting", server_type="medium"),
    ]
    named = unknown_servers(state, listed, now=NOW, table=TABLE)
    assert [(u.server_id, u.cost_micros) for u in named] == [("booting", None)]


def test_a_server_of_a_type_the_price_table_lacks_is_named_without_a_cost() -> None:
    """An open string: no price, no crash; its cost is "not known"."""
    s = Listed(server_id="x", status="Ready", server_type="9x-huge", service_ready_at=NOW - 5)
    (u,) = unknown_servers(_state(), [s], now=NOW, table=TABLE)
    assert u.cost_micros is None
    assert "cost not known" in unknown_server_line(u, now=NOW)


def test_the_line_names_the_server_its_bill_and_the_command_that_stops_it() -> None:
    """One line: id, state since when, cost so far, and `machine down --server-id`."""
    u = UnknownServer("c88e03b6", "Ready", "medium", NOW - 60, NOW + 540, 16_500)
    line = unknown_server_line(u, now=NOW)
    assert "\n" not in line
    assert "c88e03b6 (medium), Ready since " in line
    assert "$0.0165 so far" in line
    assert "python -m conjure_actors machine down --server-id c88e03b6" in line


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.sampled_from(["Ready", "Starting", "Error", *GONE_STATUSES]),
        ),
        unique_by=lambda t: t[0],
    ),
    st.sets(st.sampled_from(["a", "b", "c", "d"])),
)
def test_no_server_of_the_log_and_none_going_is_ever_named(
    listed: list[tuple[str, str]], logged: set[str]
) -> None:
    """Whatever the listing and the log: a named server is unknown to the log and up."""
    state = _state(*(Machine(server_id=sid) for sid in logged))
    servers = [Listed(server_id=sid, status=status) for sid, status in listed]
    named = unknown_servers(state, servers, now=NOW, table=TABLE)
    assert {u.server_id for u in named} == {
        sid for sid, status in listed if sid not in logged and status not in GONE_STATUSES
    }


def _logged_ready(sid: str, duration: int, ready_at: float = NOW - 600) -> Machine:
    """A machine the log knows only from its MachineReady (its launch record lost)."""
    return Machine(
        server_id=sid,
        status="ready",
        service_ready_at=ready_at,
        estimated_stopping_at=ready_at + duration,
    )


def test_a_machine_without_its_launch_record_answers_the_intent_whose_marker_it_echoes() -> None:
    """Two open intents of the same kind: the one whose marker the logged Ready shows."""
    m = _logged_ready("m", 583)
    state = _state(m, intents=(_intent("k1", 571, NOW - 900), _intent("k2", 583, NOW - 800)))
    assert launch_of(state, m, _ready("m", duration=583)) == "k2"


def test_a_renewed_machine_answers_the_one_intent_of_its_version_and_time() -> None:
    """Its marker renewed away: the one intent of its type and version logged before it
    was Ready is its launch; one logged after it was Ready is not."""
    m = _logged_ready("m", 1200)
    before = _intent("k1", 583, NOW - 900)
    assert launch_of(_state(m, intents=(before,)), m, _ready("m", 1200)) == "k1"
    after = _intent("k2", 583, NOW - 100)
    assert launch_of(_state(m, intents=(after,)), m, _ready("m", 1200)) is None


def test_an_intent_another_listed_server_echoes_is_not_tied_by_version_alone() -> None:
    """The unknown server "x" echoes the intent's marker: it is that launch's server."""
    m = _logged_ready("m", 1200)
    state = _state(m, intents=(_intent("k1", 583, NOW - 900),))
    assert launch_of(state, m, _ready("m", 1200), unknown=[_ready("x", 583)]) is None


def test_a_machine_with_its_launch_record_or_two_matching_intents_ties_none() -> None:
    """Known launch: nothing to tie. Two intents of its kind, no marker: not provable."""
    m = _logged_ready("m", 1200)
    m.request_key = "k0"
    assert launch_of(_state(m, intents=(_intent("k1", 583, NOW - 900),)), m, None) is None
    m = _logged_ready("m", 1200)
    two = (_intent("k1", 583, NOW - 900), _intent("k2", 571, NOW - 900))
    assert launch_of(_state(m, intents=two), m, _ready("m", 1200)) is None


def test_a_server_echoing_an_intent_but_ready_before_it_is_named() -> None:
    """Ready before the launch was asked for, it is not that launch's server (a machine is
    Ready minutes after its launch), however well it echoes the marker: it is named."""
    state = _state(intents=(_intent("k", 583, NOW),))
    named = unknown_servers(state, [_ready("theirs", duration=583)], now=NOW, table=TABLE)
    assert [u.server_id for u in named] == ["theirs"]
