"""An expired job of the job service leaves the state (the fold of ``ApiJobExpired``): its
``Job``, its API facts, its outputs' map, whatever is keyed by its id; what outlives it is
bounded (its Idempotency-Key claim until its own expiry, a tombstone for
``service_events.EXPIRED_KEPT``, one count in ``expired_tally``). A serve's memory and
snapshots follow the jobs it retains, not every job it ran (QA11 finding 8)."""

from __future__ import annotations

import json
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.domain import decide
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se
from conjure_actors.domain.state import State, apply, initial_state, state_to_builtins
from conjure_actors.runtime.events import ActorCrashed

WF = "e" * 64
SERVER = "comfyui"
RETENTION = 60.0

# A job's fate: succeeded with 0..3 outputs stored (one more not stored, or not), failed,
# cancelled while queued.
FATES = st.one_of(
    st.tuples(st.just("succeeded"), st.integers(0, 3), st.booleans()),
    st.tuples(st.just("failed"), st.just(0), st.just(False)),
    st.tuples(st.just("cancelled"), st.just(0), st.just(False)),
)


def _job_id(i: int) -> str:
    return f"00000000-0000-4000-8000-{i:012d}"


def _base() -> State:
    state = initial_state()
    for event in (
        ev.SystemStarted(run_id="run-1", version="0.1.0", mode="comfyui", at=0.0),
        ev.MachineAttached(server_id=SERVER, kind="comfyui", at=0.0),
        ev.WorkflowRegistered(sha256=WF, name="api", graph_json="{}", at=0.0),
    ):
        apply(state, event)
    return state


def _emit(state: State, log: list[Any], *events: Any) -> None:
    for event in events:
        apply(state, event)
        log.append(event)


def _run_job(state: State, log: list[Any], i: int, fate: tuple[str, int, bool], t: float) -> None:
    """One job of the API, from its submission (with an Idempotency-Key) to its logged end."""
    job_id, key = _job_id(i), f"key-{i}"
    _emit(
        state,
        log,
        se.IdempotencyKeyClaimed(key=key, scope="jobs", expires_at=t + 86400, at=t),
        se.ApiJobAccepted(
            job_id=job_id,
            labels={"client": "c"},
            idempotency_key=key,
            extra_data_keys=("api_key_comfy_org",),
            expires_at=t + RETENTION,
            at=t,
        ),
    )
    _emit(state, log, decide.submit_job(state, job_id=job_id, workflow_sha256=WF, at=t))
    _emit(state, log, decide.queue_job(state, job_id, at=t))
    status, outputs, unstored = fate
    if status == "cancelled":
        _emit(state, log, se.ApiJobCancelRequested(job_id=job_id, at=t + 1))
        _emit(state, log, decide.cancel_job(state, job_id, reason="by the client", at=t + 1))
    else:
        prompt = f"p-{i}"
        _emit(state, log, decide.lease_machine(state, SERVER, job_id, at=t + 1))
        _emit(state, log, decide.start_job(state, job_id, SERVER, at=t + 1))
        _emit(
            state,
            log,
            ev.PromptSubmitting(
                job_id=job_id,
                attempt=1,
                prompt_id=prompt,
                client_id="c",
                server_id=SERVER,
                at=t + 2,
            ),
        )
        if status == "failed":  # its actor crashed once on the way (a record it leaves)
            _emit(
                state,
                log,
                ActorCrashed(
                    actor=f"conjure/jobs/{job_id}",
                    incarnation=1,
                    error_type="ValueError",
                    message="x",
                    at=t + 2,
                ),
            )
            _emit(
                state,
                log,
                decide.fail_job(state, job_id, error_type="ExecutionError", message="x", at=t + 3),
            )
        else:
            _emit(
                state, log, ev.PromptSubmitted(job_id=job_id, prompt_id=prompt, number=1, at=t + 2)
            )
            paths = [f"/out/{job_id}/out/o{n}.png" for n in range(outputs + int(unstored) or 1)]
            for n, path in enumerate(paths):
                _emit(
                    state,
                    log,
                    ev.OutputSaved(
                        job_id=job_id,
                        node_id="9",
                        filename=f"o{n}.png",
                        path=path,
                        size=1,
                        sha256=f"{n}" * 64,
                        kind="image",
                        at=t + 3,
                    ),
                )
            _emit(state, log, decide.succeed_job(state, job_id, at=t + 3))
            for n, path in enumerate(paths[:outputs]):
                _emit(
                    state,
                    log,
                    se.AssetRecorded(
                        asset_id=f"{job_id}-a{n}",
                        hash=f"blake3:{n}" + "0" * 63,
                        size=1,
                        content_type="image/png",
                        file_path=f"o{n}.png",
                        tags=("output",),
                        job_id=job_id,
                        node_id="9",
                        kind="image",
                        source_path=path,
                        expires_at=t + RETENTION,
                        at=t + 4,
                    ),
                )
            if unstored or not outputs:
                _emit(
                    state,
                    log,
                    se.ApiJobOutputsNotStored(
                        job_id=job_id, paths=tuple(paths[outputs:]), reason="gone", at=t + 4
                    ),
                )
        _emit(state, log, decide.release_machine(state, SERVER, job_id, at=t + 4))
    _emit(state, log, *se.expiry_moves(state, RETENTION, t + 5, [job_id]))


def _expire(state: State, log: list[Any], job_id: str, at: float) -> None:
    """What the AssetActor's sweep logs once the job passed its deadline."""
    _emit(state, log, se.ApiJobExpired(job_id=job_id, at=at))
    for record in list(state.service.assets.values()):
        if record.job_id == job_id:
            _emit(state, log, se.AssetExpired(asset_id=record.asset_id, at=at))


def _without_tombs(state: State) -> str:
    """The state as JSON, but for what is meant to outlive an expired job a while."""
    data = state_to_builtins(state)
    data["service"].pop("expired_jobs")
    for claim in data["service"]["idempotency"].values():
        claim.pop("job_id")
    return json.dumps(data)


@settings(max_examples=40, deadline=None)
@given(fates=st.lists(FATES, min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_after_every_job_s_expiry_the_state_holds_none_of_them(
    fates: list[tuple[str, int, bool]], order: Any
) -> None:
    """Whatever the jobs did and in whichever order they expire, none of them is left in
    the state (jobs, API facts, outputs, outputs not stored, prompts, assets, its actor's
    crash) but for its claim and tombstone; the tally counts each as the service did."""
    state, log = _base(), []
    for i, fate in enumerate(fates):
        _run_job(state, log, i, fate, t=10.0 * i)
    served = {job_id: se.served_status(state, job) for job_id, job in state.jobs.items()}
    ids = list(state.service.api_jobs)
    order.shuffle(ids)
    for job_id in ids:
        _expire(state, log, job_id, at=1000.0)
    text = _without_tombs(state)
    assert all(job_id not in text for job_id in ids)
    assert not state.jobs
    assert not state.service.api_jobs
    assert set(state.service.expired_jobs) == set(ids)
    tally: dict[str, int] = {}
    for status in served.values():
        tally[status] = tally.get(status, 0) + 1
    assert state.service.expired_tally == tally
    # Each key still answers until its own expiry, and is no torn write's (not released).
    assert {c.job_id for c in state.service.idempotency.values()} == set(ids)
    assert se.claims_without_job(state, 2000.0) == []


def _expired_jobs_state(n: int, spacing: float) -> State:
    state, log = _base(), []
    for i in range(n):
        t = spacing * i
        _run_job(state, log, i, ("succeeded", 2, False), t=t)
        _expire(state, log, _job_id(i), at=t + 100)
        _emit(
            state,
            log,
            se.IdempotencyKeyReleased(key=f"key-{i}", scope="jobs", reason="expired", at=t + 100),
        )
    return state


def test_the_state_s_size_does_not_grow_with_the_jobs_that_expired() -> None:
    """1,000 expired jobs, one every 100 s (their tombstones go after EXPIRED_KEPT): the
    encoded state (a snapshot's bytes) is the size of 100's, give or take digits."""
    small = len(msgspec.msgpack.encode(_expired_jobs_state(100, 100.0)))
    large = len(msgspec.msgpack.encode(_expired_jobs_state(1000, 100.0)))
    assert large - small < 64


def test_jobs_expiring_at_once_cost_a_small_tombstone_each() -> None:
    """All within EXPIRED_KEPT: each job leaves a tombstone of about a hundred bytes, not
    its whole record."""
    small = len(msgspec.msgpack.encode(_expired_jobs_state(10, 1.0)))
    large = len(msgspec.msgpack.encode(_expired_jobs_state(110, 1.0)))
    assert (large - small) / 100 < 160


def test_a_tombstone_names_the_out_its_outputs_were_saved_under() -> None:
    """A start after a crash between the expiry and the removal finds the folder."""
    state, log = _base(), []
    _run_job(state, log, 0, ("succeeded", 1, False), t=0.0)
    _expire(state, log, _job_id(0), at=100.0)
    tomb = state.service.expired_jobs[_job_id(0)]
    assert (tomb.at, tomb.out_dir, tomb.submitted_at) == (100.0, "/out", 0.0)


def test_a_job_not_ended_does_not_leave_the_state_on_an_expiry() -> None:
    """A nonsensical expiry (the sweep expires ended jobs only) leaves the running job."""
    state, log = _base(), []
    _emit(state, log, se.ApiJobAccepted(job_id=_job_id(0), expires_at=60.0, at=0.0))
    _emit(state, log, decide.submit_job(state, job_id=_job_id(0), workflow_sha256=WF, at=0.0))
    _emit(state, log, se.ApiJobExpired(job_id=_job_id(0), at=100.0))
    assert _job_id(0) in state.jobs
    assert state.service.api_jobs[_job_id(0)].expired
    assert not state.service.expired_jobs
    assert not state.service.expired_tally


def test_a_folded_log_up_to_before_the_expiry_still_holds_the_job() -> None:
    """The log is unchanged: its fold up to any record before the expiry has the job."""
    state, log = _base(), []
    _run_job(state, log, 0, ("succeeded", 1, False), t=0.0)
    _expire(state, log, _job_id(0), at=100.0)
    before = _base()
    for event in log[: next(i for i, e in enumerate(log) if isinstance(e, se.ApiJobExpired))]:
        apply(before, event)
    assert before.jobs[_job_id(0)].status == "succeeded"
    assert _job_id(0) in before.service.api_jobs


def test_a_job_submitted_after_an_expiry_takes_a_place_no_other_job_has() -> None:
    """A job's ``order`` (its place in the serving order) is the count of jobs ever
    submitted, not of those the state still holds: after an expiry, ``len(jobs)`` gave the
    next job the place of a job still queued."""
    state, log = _base(), []
    _run_job(state, log, 9, ("succeeded", 0, False), 0.0)
    for i in range(3):
        _emit(state, log, decide.submit_job(state, job_id=_job_id(i), workflow_sha256=WF, at=i))
    _expire(state, log, _job_id(9), RETENTION + 100)
    _emit(state, log, decide.submit_job(state, job_id=_job_id(4), workflow_sha256=WF, at=20.0))
    orders = [job.order for job in state.jobs.values()]
    assert _job_id(9) not in state.jobs
    assert sorted(orders) == [1, 2, 3, 4]
