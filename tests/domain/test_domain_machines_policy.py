"""The machine pool's policies (pure functions of ``domain/machines_policy``)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy as policy
from conjure_actors.domain.errors import CommandRejectedError
from conjure_actors.domain.machines_policy import (
    LAUNCH_MARKER_SHARE,
    LAUNCH_MARKER_SPREAD,
    MachineView,
    Observation,
    Seen,
    bill_after_delete,
    bill_after_stop_again,
    gone_at,
    idle_expired,
    idle_to_stop,
    launch_duration,
    launches_exhausted,
    launches_needed,
    lease_takes_job,
    lost_bill,
    machine_stopped,
    matches_intent,
    observe,
    paid_machines,
    pick_machine,
    renewal_refused,
    renewed_duration,
    reserved_slots,
    should_renew,
    surplus_starting,
    unseen_ready_seconds,
)
from conjure_actors.domain.prices import billed_seconds, cost_micros, default_price_table
from conjure_actors.domain.state import (
    Job,
    LaunchRequest,
    Machine,
    State,
    apply,
    initial_state,
)

TABLE = default_price_table()


def _m(
    sid: str,
    *,
    ready: bool = True,
    healthy: bool = True,
    version: str | None = "v1",
    leases: int = 0,
    stopping: bool = False,
) -> MachineView:
    return MachineView(sid, ready, healthy, version, leases, stopping)


def test_pick_prefers_ready_machine_of_same_version() -> None:
    """A Ready healthy machine of the job's workflow version is reused."""
    machines = [_m("a", version="v2"), _m("b", ready=False), _m("c")]
    assert pick_machine(machines, "v1", 1) == "c"


def test_pick_skips_full_unhealthy_and_stopping() -> None:
    """Full, unhealthy and stopping machines are never picked."""
    machines = [_m("a", leases=1), _m("b", healthy=False), _m("c", stopping=True)]
    assert pick_machine(machines, "v1", 1) is None


def test_pick_least_loaded_first() -> None:
    """With several jobs per machine, the least loaded machine is picked."""
    machines = [_m("a", leases=2), _m("b", leases=1)]
    assert pick_machine(machines, "v1", 3) == "b"


def test_pick_without_a_version_on_either_side_matches_any() -> None:
    """A job without a workflow version runs anywhere; a machine without one (a ComfyUI the
    user runs) takes any job."""
    assert pick_machine([_m("a", version="v2")], None, 1) == "a"
    assert pick_machine([_m("a", version=None)], "v1", 1) == "a"


def test_pick_only_server_restricts_choice() -> None:
    """Recovery re-attaching a prompt gets that machine or nothing."""
    machines = [_m("a"), _m("b")]
    assert pick_machine(machines, "v1", 1, only_server="b") == "b"
    assert pick_machine([_m("a")], "v1", 1, only_server="b") is None


@given(
    waiting=st.integers(0, 50),
    starting=st.integers(0, 10),
    alive=st.integers(0, 10),
    max_machines=st.integers(1, 10),
    per=st.integers(1, 4),
)
def test_launches_never_exceed_cap_or_demand(
    waiting: int, starting: int, alive: int, max_machines: int, per: int
) -> None:
    """Launches never push past max_machines nor exceed the unmet demand."""
    alive = max(alive, starting)
    n = launches_needed(
        waiting=waiting,
        starting=starting,
        alive=alive,
        max_machines=max_machines,
        jobs_per_machine=per,
    )
    assert n >= 0
    assert alive + n <= max(alive, max_machines)
    assert (n + starting) * per < waiting + per or n == 0


def test_renew_only_when_work_remains_and_lease_short() -> None:
    """A lease is renewed near its end only while work remains."""
    assert should_renew(now=100, estimated_stopping_at=150, renew_margin=60, work_remains=True)
    assert not should_renew(now=100, estimated_stopping_at=150, renew_margin=60, work_remains=False)
    assert not should_renew(now=100, estimated_stopping_at=500, renew_margin=60, work_remains=True)


@given(st.floats(0, 10_000), st.floats(0, 10_000), st.floats(1, 3600))
def test_renewed_duration_covers_the_lease(ready: float, delta: float, lease: float) -> None:
    """The renewed duration keeps the machine at least ``lease`` seconds from now."""
    now = ready + delta
    d = renewed_duration(now=now, service_ready_at=ready, lease_seconds=lease)
    assert ready + d >= now + lease - 1e-6


def test_idle_expiry() -> None:
    """A machine idle for the timeout is expired; one never idle is not."""
    assert idle_expired(now=200, idle_since=80, idle_timeout=120)
    assert not idle_expired(now=199, idle_since=80, idle_timeout=120)
    assert not idle_expired(now=1e9, idle_since=None, idle_timeout=1)


def _starting_machine(state: State, sid: str = "s1") -> Machine:
    apply(
        state,
        ev.MachineLaunchRequested(
            request_key="k",
            server_type="medium",
            workflow_version="v1",
            estimated_duration=600,
            at=0.0,
        ),
    )
    apply(state, ev.MachineLaunched(request_key="k", server_id=sid, at=1.0))
    return state.machines[sid]


def test_stop_while_starting_bills_from_the_servers_ready_time() -> None:
    """A machine the log still says is Starting, but whose final record says Ready at
    100.25, stopped at 130.5: billed 31 s at its type's rate, as the cloud bills it."""
    state = initial_state()
    _starting_machine(state)
    event = machine_stopped(
        state, "s1", stopped_at=130.5, server_ready_at=100.25, table=TABLE, at=131.0
    )
    rate = TABLE.rate("medium")
    assert event.billed_seconds == 31
    assert event.cost_micros == cost_micros(rate, 31)
    assert (event.service_ready_at, event.rate_micros_per_hour) == (100.25, rate)
    apply(state, event)
    m = state.machines["s1"]
    assert (m.status, m.cost_micros, m.service_ready_at) == ("stopped", event.cost_micros, 100.25)
    assert state.ledger.total_micros == event.cost_micros


def test_stop_of_a_machine_never_ready_bills_nothing() -> None:
    """No Ready time in the final record nor in the log: 0 s, 0 µ$."""
    state = initial_state()
    _starting_machine(state)
    event = machine_stopped(state, "s1", stopped_at=500.0, server_ready_at=None, table=TABLE, at=1)
    assert (event.billed_seconds, event.cost_micros, event.service_ready_at) == (0, 0, None)


def test_stop_without_final_record_uses_the_logged_ready_time() -> None:
    """A machine seen Ready (rate in the log) whose final record is missing is billed
    from the logged Ready time at the logged rate."""
    state = initial_state()
    _starting_machine(state)
    apply(
        state,
        ev.MachineReady(
            server_id="s1",
            service_ready_at=50.0,
            estimated_stopping_at=650.0,
            rate_micros_per_hour=3_600_000,
            price_table_version="t",
            at=51.0,
        ),
    )
    event = machine_stopped(state, "s1", stopped_at=60.2, server_ready_at=None, table=TABLE, at=61)
    assert (event.billed_seconds, event.cost_micros) == (11, 11_000)


def test_a_stopped_machine_cannot_be_stopped_again() -> None:
    """The final bill is logged once."""
    state = initial_state()
    _starting_machine(state)
    apply(
        state, machine_stopped(state, "s1", stopped_at=5, server_ready_at=None, table=TABLE, at=5)
    )
    try:
        machine_stopped(state, "s1", stopped_at=6, server_ready_at=None, table=TABLE, at=6)
    except CommandRejectedError:
        return
    raise AssertionError("a second final bill was accepted")


def test_a_machine_taken_for_lost_then_found_up_and_stopped_gets_its_bill_replaced() -> None:
    """Lost while Starting (billed 0), then listed Ready and stopped: the second bill, from
    its final record, replaces the first in the ledger, with no anomaly."""
    state = initial_state()
    _starting_machine(state)
    apply(state, ev.MachineLost(server_id="s1", reason="vanished (404)", at=70.0))
    apply(
        state, machine_stopped(state, "s1", stopped_at=70, server_ready_at=None, table=TABLE, at=70)
    )
    assert state.ledger.total_micros == 0
    bill = machine_stopped(
        state, "s1", stopped_at=400.0, server_ready_at=100.0, table=TABLE, at=400
    )
    apply(state, bill)
    assert bill.billed_seconds == 300
    assert state.machines["s1"].cost_micros == bill.cost_micros > 0
    assert state.ledger.total_micros == bill.cost_micros
    assert state.anomalies == []


def test_a_machine_lost_never_seen_ready_is_billed_by_its_launchs_lease() -> None:
    """Gone while the runtime was down, never seen Ready (before: billed $0, while RunComfy
    billed it from Ready to its lease end): billed its launch's estimated_duration, the
    most it can have cost, priced by the table, in the ledger, with no Ready time."""
    state = initial_state()
    _starting_machine(state)  # launched at 1.0 with estimated_duration 600
    apply(state, ev.MachineLost(server_id="s1", reason="gone while we were down", at=900.0))
    bill = lost_bill(state, "s1", gone_at=900.0, lease_seconds=600.0, table=TABLE, at=900.0)
    rate = TABLE.rate("medium")
    assert (bill.billed_seconds, bill.cost_micros) == (600, cost_micros(rate, 600))
    assert (bill.service_ready_at, bill.rate_micros_per_hour) == (None, rate)
    apply(state, bill)
    m = state.machines["s1"]
    assert (m.status, m.cost_micros, m.rate_micros_per_hour) == ("stopped", bill.cost_micros, rate)
    assert state.ledger.total_micros == bill.cost_micros
    assert state.ledger.price_table_versions == [TABLE.version]
    assert state.anomalies == []


def test_a_machine_lost_never_seen_ready_bills_at_most_the_time_since_its_launch() -> None:
    """Found gone 100 s after its launch: it cannot have billed more than 100 s."""
    state = initial_state()
    m = _starting_machine(state)
    assert m.launch_duration == 600
    assert unseen_ready_seconds(m, 100.5, lease_seconds=900.0) == 100  # ceil(100.5 - 1.0)
    m.launch_duration = None  # a log without it: the configured lease bounds it
    assert unseen_ready_seconds(m, 5000.0, lease_seconds=300.0) == 300


def test_a_machine_lost_never_seen_ready_bills_from_the_last_look_that_saw_it_starting() -> None:
    """Polled Starting through a 3-minute boot, last seen Starting at 180.5, found gone at
    185.5: RunComfy billed nothing before that look, so at most 5 s (before: 185 s from
    its launch, phantom spend against the budget); never more than its lease."""
    state = initial_state()
    m = _starting_machine(state)  # launched at 1.0 with estimated_duration 600
    assert unseen_ready_seconds(m, 185.5, lease_seconds=600.0, seen_starting_at=180.5) == 5
    assert unseen_ready_seconds(m, 5000.0, lease_seconds=600.0, seen_starting_at=180.5) == 600
    bill = lost_bill(
        state,
        "s1",
        gone_at=185.5,
        lease_seconds=600.0,
        table=TABLE,
        at=186.0,
        seen_starting_at=180.5,
    )
    assert (bill.billed_seconds, bill.cost_micros) == (5, cost_micros(TABLE.rate("medium"), 5))


def test_a_machine_lost_after_it_was_seen_ready_is_billed_from_its_ready_time() -> None:
    """Seen Ready: from its logged Ready time to when it was found gone, as before."""
    state = initial_state()
    _starting_machine(state)
    apply(
        state,
        ev.MachineReady(
            server_id="s1",
            service_ready_at=50.0,
            estimated_stopping_at=650.0,
            rate_micros_per_hour=3_600_000,
            price_table_version="t",
            at=51.0,
        ),
    )
    bill = lost_bill(state, "s1", gone_at=80.0, lease_seconds=600.0, table=TABLE, at=81.0)
    assert (bill.billed_seconds, bill.cost_micros) == (30, 30_000)


def test_stop_bills_ceil_seconds_and_the_half_up_cost() -> None:
    """The final bill counts started seconds (ceil) and rounds the cost half up."""
    state = initial_state()
    _starting_machine(state)
    rate = TABLE.rate("medium")
    apply(
        state,
        ev.MachineReady(
            server_id="s1",
            service_ready_at=100.0,
            estimated_stopping_at=None,
            rate_micros_per_hour=rate,
            price_table_version=TABLE.version,
            at=100.0,
        ),
    )
    event = machine_stopped(
        state, "s1", stopped_at=200.5, server_ready_at=None, table=TABLE, at=200.5
    )
    assert event.billed_seconds == 101
    assert event.cost_micros == (rate * 101 + 1800) // 3600


@given(
    ready=st.floats(0, 1e6, allow_nan=False),
    run=st.floats(0, 1e5, allow_nan=False),
    logged=st.booleans(),
)
def test_final_bill_is_the_billing_rule_from_the_servers_ready_time(
    ready: float, run: float, logged: bool
) -> None:
    """Whether or not a poll saw it Ready, the final bill is the billing rule applied from
    the server's Ready time to the stop: the same figure the cloud computes."""
    state = initial_state()
    _starting_machine(state)
    rate = TABLE.rate("medium")
    if logged:
        apply(
            state,
            ev.MachineReady(
                server_id="s1",
                service_ready_at=ready,
                estimated_stopping_at=None,
                rate_micros_per_hour=rate,
                price_table_version=TABLE.version,
                at=ready,
            ),
        )
    event = machine_stopped(
        state, "s1", stopped_at=ready + run, server_ready_at=ready, table=TABLE, at=0
    )
    assert event.cost_micros == cost_micros(rate, billed_seconds(ready, ready + run))


def _observe(m: Machine, seen: Seen | None, **kw: object) -> Observation:
    args: dict[str, object] = {
        "since_launch": 10.0,
        "listed_before": True,
        "ready_timeout": 600.0,
        "stop_in_flight": False,
    }
    args.update(kw)
    return observe(m, seen, **args)  # type: ignore[arg-type]


def test_observe_starting_to_ready() -> None:
    """A Starting machine listed Ready with its Ready time: log it Ready."""
    m = Machine(server_id="s", status="starting")
    assert _observe(m, Seen("Ready", True, 5.0, 605.0)) is Observation.READY
    assert _observe(m, Seen("Starting", False)) is Observation.NOTHING


def test_observe_a_404_right_after_launch_is_not_a_loss() -> None:
    """Absent from the listing right after its launch: not visible yet; later, lost."""
    m = Machine(server_id="s", status="starting")
    assert _observe(m, None, listed_before=False) is Observation.NOT_VISIBLE_YET
    assert _observe(m, None, listed_before=False, since_launch=61.0) is Observation.LOST
    assert _observe(m, None) is Observation.LOST


def test_observe_stuck_starting_or_error() -> None:
    """Still Starting after ready_timeout, or Error: stuck (stop it)."""
    m = Machine(server_id="s", status="starting")
    assert _observe(m, Seen("Starting", False), since_launch=600.0) is Observation.STUCK
    assert _observe(m, Seen("Error", False)) is Observation.STUCK


def test_observe_ready_machine_lost_or_renewed() -> None:
    """A Ready machine no longer Ready stopped by itself; a moved lease end is a renewal."""
    m = Machine(server_id="s", status="ready", estimated_stopping_at=600.0)
    assert _observe(m, Seen("Deleting", False)) is Observation.LOST
    assert _observe(m, Seen("Ready", True, 0.0, 900.0)) is Observation.RENEWED
    assert _observe(m, Seen("Ready", True, 0.0, 600.0)) is Observation.NOTHING


@pytest.mark.parametrize("status", ["Error", "Initializing", "Starting", "Rebooting", ""])
def test_observe_ready_machine_listed_neither_ready_nor_going_away_is_unwell(status: str) -> None:
    """A Ready machine listed in any other status (an open string) is still there and may
    bill: unwell (stop it), never lost (forgotten while it bills)."""
    m = Machine(server_id="s", status="ready", estimated_stopping_at=600.0)
    assert _observe(m, Seen(status, False)) is Observation.UNWELL


def test_observe_stopping_machine_still_up_is_stopped_again() -> None:
    """Our stop is logged but the machine still runs (the DELETE failed): stop it again;
    nothing is decided about a machine whose DELETE is in flight."""
    m = Machine(server_id="s", status="stopping")
    assert _observe(m, Seen("Ready", True, 0.0, 600.0)) is Observation.STOP_AGAIN
    assert _observe(m, Seen("Deleting", False)) is Observation.NOTHING
    assert _observe(m, None, stop_in_flight=True) is Observation.NOTHING


def test_gone_at_bounds_the_bill() -> None:
    """A machine found gone bills up to when it was found, or its lease's end, whichever
    came first (a stop in flight at a crash: tests/domain/test_domain_stop_in_flight.py)."""
    m = Machine(server_id="s", status="stopping", estimated_stopping_at=500.0)
    m.stop_requested_at = 300.0
    assert gone_at(m, 400.0) == 400.0
    assert gone_at(m, 900.0) == 500.0
    assert math.isclose(gone_at(Machine(server_id="t"), 12.5), 12.5)


def test_a_stop_decided_at_a_crash_found_gone_past_the_lease_bills_to_the_lease_end() -> None:
    """MachineStopping is logged before its DELETE is sent: found gone only after its
    lease's end, the machine may have run to it (the DELETE never left; QA: billed 32 s of
    the cloud's 87 s). The bill goes to the lease's end, never below the cloud's."""
    m = Machine(server_id="s", status="stopping", estimated_stopping_at=500.0)
    m.stop_requested_at = 300.0
    assert gone_at(m, 900.0, stop_in_flight=True) == 500.0


def test_launches_exhausted_after_the_bounded_number_of_tries() -> None:
    """Launching stops once ``max_launch_attempts`` launches in a row never became Ready."""
    assert not launches_exhausted(failed_in_a_row=2, max_launch_attempts=3)
    assert launches_exhausted(failed_in_a_row=3, max_launch_attempts=3)


def test_a_failed_launch_long_after_the_last_starts_a_new_series() -> None:
    """Two boots that never became Ready on Monday and one on Tuesday are not three in a row
    (before, Tuesday's first failure stopped launching and failed the waiting jobs)."""
    assert policy.launches_in_a_row(2, last_at=100.0, now=200.0) == 3
    assert policy.launches_in_a_row(2, last_at=100.0, now=100.0 + 86_400.0) == 1
    assert policy.launches_in_a_row(0, last_at=None, now=5.0) == 1


@given(
    gaps=st.lists(st.floats(0.0, 3 * policy.FAILURE_SERIES_GAP), min_size=1, max_size=30),
)
def test_launches_in_a_row_count_the_failures_since_the_last_long_gap(gaps: list[float]) -> None:
    """The count after each failure is the failures since the last gap of
    ``FAILURE_SERIES_GAP`` or more between two of them (the first failure starts it)."""
    count, last, now = 0, None, 0.0
    since = 0
    for gap in gaps:
        now += gap
        if last is not None and gap >= policy.FAILURE_SERIES_GAP:
            since = 0
        since += 1
        count = policy.launches_in_a_row(count, last_at=last, now=now)
        last = now
        assert count == since


def _ready_machine(state: State, *, ready: float, lease_end: float) -> None:
    _starting_machine(state)
    apply(
        state,
        ev.MachineReady(
            server_id="s1",
            service_ready_at=ready,
            estimated_stopping_at=lease_end,
            rate_micros_per_hour=TABLE.rate("medium"),
            price_table_version=TABLE.version,
            at=ready,
        ),
    )


def test_a_delete_that_found_the_server_bills_to_its_answer_from_the_servers_ready_time() -> None:
    """Found: billing ended when the ``DELETE`` answered, from the final record's Ready time."""
    state = initial_state()
    _ready_machine(state, ready=100.0, lease_end=700.0)
    event = bill_after_delete(
        state, "s1", found=True, answered_at=900.0, server_ready_at=90.0, table=TABLE, at=901.0
    )
    assert (event.stopped_at, event.service_ready_at) == (900.0, 90.0)
    assert event.billed_seconds == billed_seconds(90.0, 900.0)


def test_a_delete_answered_404_bills_to_the_lease_end_from_the_logged_ready_time() -> None:
    """Not found: it was gone before, at its lease's end at the latest; a Ready time the 404
    carries is not believed."""
    state = initial_state()
    _ready_machine(state, ready=100.0, lease_end=700.0)
    event = bill_after_delete(
        state, "s1", found=False, answered_at=900.0, server_ready_at=90.0, table=TABLE, at=901.0
    )
    assert (event.stopped_at, event.service_ready_at) == (700.0, 100.0)
    assert event.billed_seconds == billed_seconds(100.0, 700.0)


def test_a_delete_answered_404_bills_to_the_first_listing_that_left_the_machine_out() -> None:
    """Not found, and a listing left it out before (it vanished): billed to that listing,
    not to the (late) answer; a 200 is billed to its answer whatever a listing said."""
    state = initial_state()
    _ready_machine(state, ready=100.0, lease_end=700.0)
    gone = bill_after_delete(
        state,
        "s1",
        found=False,
        answered_at=400.0,
        server_ready_at=None,
        table=TABLE,
        at=401.0,
        missing_since=150.0,
    )
    assert gone.stopped_at == 150.0
    assert gone.billed_seconds == billed_seconds(100.0, 150.0)
    found = bill_after_delete(
        state,
        "s1",
        found=True,
        answered_at=400.0,
        server_ready_at=None,
        table=TABLE,
        at=401.0,
        missing_since=150.0,
    )
    assert found.stopped_at == 400.0


def _stopped_at_200(state: State) -> None:
    """s1 Ready at 100, lease to 700, its first DELETE answered 200 at 200."""
    _ready_machine(state, ready=100.0, lease_end=700.0)
    apply(
        state,
        bill_after_delete(
            state, "s1", found=True, answered_at=200.0, server_ready_at=None, table=TABLE, at=200
        ),
    )


def test_a_delete_sent_again_extends_the_bill_to_its_answer() -> None:
    """Still up after its stop's 200: the DELETE sent again ends the bill at its answer, and
    the ledger holds that bill instead of the first one."""
    state = initial_state()
    _stopped_at_200(state)
    event = bill_after_stop_again(
        state, "s1", found=True, answered_at=260.0, server_ready_at=None, table=TABLE, at=261.0
    )
    assert event is not None
    assert (event.stopped_at, event.billed_seconds) == (260.0, billed_seconds(100.0, 260.0))
    apply(state, event)
    m = state.machines["s1"]
    assert (m.stopped_at, m.cost_micros) == (260.0, event.cost_micros)
    assert state.ledger.total_micros == cost_micros(TABLE.rate("medium"), 160)
    assert state.anomaly_count == 0


def test_a_delete_sent_again_answered_404_bills_to_the_lease_end_at_most() -> None:
    """Gone (404) by the DELETE sent again: billed to its answer, the lease end at most."""
    state = initial_state()
    _stopped_at_200(state)
    event = bill_after_stop_again(
        state, "s1", found=False, answered_at=900.0, server_ready_at=None, table=TABLE, at=901.0
    )
    assert event is not None
    assert event.stopped_at == 700.0


def test_a_delete_sent_again_never_shortens_the_bill() -> None:
    """An answer no later than the logged stop extends nothing; a machine not logged
    stopped has no bill to extend."""
    state = initial_state()
    _stopped_at_200(state)
    early = bill_after_stop_again(
        state, "s1", found=True, answered_at=150.0, server_ready_at=None, table=TABLE, at=150
    )
    assert early is None
    running = initial_state()
    _ready_machine(running, ready=100.0, lease_end=700.0)
    assert (
        bill_after_stop_again(
            running, "s1", found=True, answered_at=300, server_ready_at=None, table=TABLE, at=300
        )
        is None
    )


def test_a_machine_stopped_again_while_not_stopped_is_an_anomaly_that_changes_nothing() -> None:
    """The fold stays total: a MachineStoppedAgain for a machine not logged stopped is an
    anomaly, and its bill is not touched."""
    state = initial_state()
    _ready_machine(state, ready=100.0, lease_end=700.0)
    apply(
        state,
        ev.MachineStoppedAgain(
            server_id="s1", stopped_at=300.0, billed_seconds=200, cost_micros=999, at=300.0
        ),
    )
    assert state.anomaly_count == 1
    assert state.machines["s1"].cost_micros == 0
    assert state.ledger.total_micros == 0


def test_paid_machines_are_the_runcomfy_machines_not_stopped_or_lost() -> None:
    """A user's ComfyUI is not paid for; a stopped or lost machine no longer is."""
    state = initial_state()
    _ready_machine(state, ready=100.0, lease_end=700.0)
    apply(state, ev.MachineAttached(server_id="local", kind="comfyui", at=1.0))
    assert [m.server_id for m in paid_machines(state)] == ["s1"]
    apply(state, ev.MachineLost(server_id="s1", reason="404", at=2.0))
    assert paid_machines(state) == []


def test_reserved_slots_are_the_submitted_prompts_on_live_machines() -> None:
    """A running or interrupted job with a prompt submitted on a live machine keeps a slot
    there; a queued or rejected job, one not submitted yet, or a gone machine keeps none."""
    state = initial_state()
    for sid, status in [("s1", "ready"), ("s2", "ready"), ("gone", "lost")]:
        state.machines[sid] = Machine(server_id=sid, status=status, leases=["a"] * (sid == "s1"))
    jobs = {
        "a": ("running", "s1", "started"),  # still in the log's lease (dropped on adoption)
        "b": ("interrupted", "s1", "submitted"),
        "c": ("running", "s2", "submitting"),
        "d": ("running", "s2", "rejected"),
        "e": ("running", "s2", None),
        "f": ("queued", "s2", "started"),
        "g": ("running", "gone", "started"),
    }
    for job_id, (status, sid, execution) in jobs.items():
        state.jobs[job_id] = Job(
            job_id=job_id,
            workflow_sha256="w",
            status=status,
            server_id=sid,
            prompt_id=f"p-{job_id}",
            execution=execution,
        )
    assert reserved_slots(state) == {"s1": {"a", "b"}, "s2": {"c"}}


@given(
    waiting=st.integers(0, 20),
    starting=st.integers(0, 20),
    alive=st.integers(0, 20),
    jpm=st.integers(1, 3),
    hedge=st.integers(1, 4),
)
def test_hedged_launches_cover_each_machine_needed_hedge_times(
    waiting: int, starting: int, alive: int, jpm: int, hedge: int
) -> None:
    """Launches plus machines starting reach hedge per machine needed (within max_machines);
    once they do, none of them is surplus."""
    n = launches_needed(
        waiting=waiting,
        starting=starting,
        alive=alive,
        max_machines=40,
        jobs_per_machine=jpm,
        hedge=hedge,
    )
    needed = math.ceil(waiting / jpm) * hedge
    assert starting + n == max(starting, min(needed, starting + max(0, 40 - alive)))
    assert (
        surplus_starting(
            waiting=waiting, starting=min(starting, needed), jobs_per_machine=jpm, hedge=hedge
        )
        == 0
    )


def test_surplus_is_what_starts_beyond_the_hedge() -> None:
    """One job waiting, hedge 2, three starting: one is surplus; none waiting: all three."""
    assert surplus_starting(waiting=1, starting=3, jobs_per_machine=1, hedge=2) == 1
    assert surplus_starting(waiting=0, starting=3, jobs_per_machine=1, hedge=2) == 3


@given(
    st.lists(st.floats(0, 1000), max_size=8),
    st.floats(0, 1000),
    st.floats(0, 500),
    st.integers(0, 4),
)
def test_idle_to_stop_keeps_the_warm_pool_and_stops_only_expired(
    since: list[float], now: float, idle_timeout: float, warm_pool: int
) -> None:
    """Only machines idle for idle_timeout are stopped, the longest idle first, and at least
    min(warm_pool, idle) machines stay."""
    idle = [(f"s{i}", t) for i, t in enumerate(since)]
    stop = idle_to_stop(idle, now=now, idle_timeout=idle_timeout, warm_pool=warm_pool)
    by_id = dict(idle)
    assert all(now - by_id[sid] >= idle_timeout for sid in stop)
    assert len(idle) - len(stop) >= min(warm_pool, len(idle))
    kept = [t for sid, t in idle if sid not in stop]
    assert all(by_id[sid] <= t for sid in stop for t in kept)
    if warm_pool == 0:
        assert len(stop) == sum(now - t >= idle_timeout for t in since)


@given(
    lease=st.integers(min_value=1, max_value=100_000),
    taken=st.sets(st.integers(min_value=0, max_value=100_000), max_size=80),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_launch_duration_is_a_free_marker_never_past_the_lease(
    lease: int, taken: set[int], draw: float
) -> None:
    """A launch's estimated_duration is at most its lease, less than LAUNCH_MARKER_SPREAD
    seconds (or LAUNCH_MARKER_SHARE % of a long lease) short of it, not one an open intent
    uses while one is free, and not the lease itself (the round figure another client most
    likely asks for) while one is free."""
    d = launch_duration(lease, taken=taken, draw=draw)
    assert 0 < d <= lease
    widest = max(LAUNCH_MARKER_SPREAD, lease * LAUNCH_MARKER_SHARE // 100)
    assert lease - d < widest
    spread = max(1, min(widest, lease // 2))
    if any(lease - k not in taken for k in range(1, spread)):
        assert d not in taken
        assert d != lease


def test_an_intent_matches_only_a_server_echoing_its_duration() -> None:
    """A server is an intent's only with the intent's estimated_duration (and its type and
    version when listed); without a duration it is not provably ours."""
    req = LaunchRequest(
        request_key="k",
        server_type="medium",
        workflow_version="v1",
        estimated_duration=583,
        max_jobs=1,
        at=0.0,
    )

    def match(server_type: str | None, version: str | None, duration: int | None) -> bool:
        return matches_intent(
            req, server_type=server_type, workflow_version_id=version, estimated_duration=duration
        )

    assert match("medium", "v1", 583)
    assert match(None, None, 583)
    assert not match("medium", "v1", 600)
    assert not match("medium", "v1", None)
    assert not match("large", "v1", 583)
    assert not match("medium", "v2", 583)


def test_a_machine_whose_renewal_the_budget_refused_takes_no_new_job() -> None:
    """Refused for the lease ending at 100: no new job while that is its end, whatever is
    left; once a renewal moved the end (the budget raised), it takes jobs again."""
    kwargs = {"now": 40.0, "renew_margin": 30.0, "renewing": False}
    assert renewal_refused(refused_end=100.0, estimated_stopping_at=100.0)
    assert not lease_takes_job(estimated_stopping_at=100.0, refused_end=100.0, **kwargs)
    assert not renewal_refused(refused_end=100.0, estimated_stopping_at=160.0)
    assert lease_takes_job(estimated_stopping_at=160.0, refused_end=100.0, **kwargs)
    assert lease_takes_job(estimated_stopping_at=100.0, refused_end=None, **kwargs)


def test_a_machine_within_the_margin_waits_for_its_renewal_answer() -> None:
    """While its renewal is being asked, a machine with less than the margin left takes no
    new job (the budget may refuse it); with more left, it does."""
    kwargs = {"renew_margin": 30.0, "refused_end": None, "renewing": True}
    assert not lease_takes_job(now=80.0, estimated_stopping_at=100.0, **kwargs)
    assert lease_takes_job(now=70.0, estimated_stopping_at=100.0, **kwargs)
    assert lease_takes_job(now=80.0, estimated_stopping_at=None, **kwargs)
