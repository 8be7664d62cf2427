"""The retention rules of the job service (``service_events.expiry_moves``, ``held_assets``
and the fold of ``ApiJobExpiryMoved``): a job's deadline runs from its end, never moves
earlier, and its assets are held until its end is logged."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.state import TERMINAL_STATUSES, State, apply, initial_state

JOB = "00000000-0000-4000-8000-0000000000d1"
ASSET = "00000000-0000-4000-8000-0000000000c1"
WF = "e" * 64
SECONDS = st.floats(min_value=0, max_value=1e6, allow_nan=False)


def _queued(asset_expires: float | None, job_expires: float) -> State:
    state = initial_state()
    for event in (
        se.AssetRecorded(
            asset_id=ASSET,
            hash="blake3:" + "4" * 64,
            size=1,
            content_type="image/png",
            expires_at=asset_expires,
            at=0.0,
        ),
        se.ApiJobAccepted(
            job_id=JOB, input_assets={"10.image": ASSET}, expires_at=job_expires, at=0.0
        ),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=0.0),
    ):
        apply(state, event)
    apply(state, decide.submit_job(state, job_id=JOB, workflow_sha256=WF, at=0.0))
    apply(state, decide.queue_job(state, JOB, at=0.0))
    return state


def test_ended_is_the_state_s_terminal_statuses() -> None:
    """The statuses spelled in service_events (state imports it) are state's own."""
    assert se.ENDED == TERMINAL_STATUSES


def test_a_job_not_ended_holds_its_input_and_gets_no_move() -> None:
    """Queued: its input asset is held (the sweep skips it) and no end is due."""
    state = _queued(60.0, 60.0)
    assert se.held_assets(state) == {ASSET}
    assert se.expiry_moves(state, 60.0, 500.0) == []


@given(
    asset_expires=st.none() | SECONDS,
    job_expires=SECONDS,
    ended_at=SECONDS,
    keep=st.floats(min_value=60, max_value=1e6),
)
def test_a_job_s_end_moves_its_deadlines_later_never_earlier(
    asset_expires: float | None, job_expires: float, ended_at: float, keep: float
) -> None:
    """Once it ended: one move to its end + the retention (or its own later deadline); its
    input is no longer held and lives at least as long (a never-expiring one stays so)."""
    state = _queued(asset_expires, job_expires)
    apply(state, decide.cancel_job(state, JOB, reason="test", at=ended_at))
    moves = se.expiry_moves(state, keep, ended_at)
    for move in moves:
        apply(state, move)
    api = state.service.api_jobs[JOB]
    record = state.service.assets[ASSET]
    assert [m.job_id for m in moves] == [JOB]
    assert api.ended
    assert api.expires_at == max(job_expires, ended_at + keep)
    assert se.held_assets(state) == set()
    if asset_expires is None:
        assert record.expires_at is None
    else:
        assert record.expires_at == max(asset_expires, api.expires_at)
    assert se.expiry_moves(state, keep, ended_at) == [], "logged once"


def test_replay_says_how_long_an_ended_job_is_kept() -> None:
    """The line of a job's logged end names the job and the seconds it is kept."""
    from conjure_actors.domain.describe import describe

    line = describe(se.ApiJobExpiryMoved(job_id=JOB, expires_at=160.0, at=100.0))
    assert line == (f"job {JOB}", "ended: kept 60s more (its retention runs from its end)")
