"""``claims_without_job``: which submissions' key claims a start releases (a write torn
between the claim and its ``ApiJobAccepted``)."""

from __future__ import annotations

from conjure_actors.domain import service_events as se
from conjure_actors.domain import state as st


def _claim(state: st.State, key: str, at: float, scope: str = "jobs") -> None:
    state.service.idempotency[se.claim_key(scope, key)] = se.IdempotencyClaim(
        key=key, scope=scope, claimed_at=at, expires_at=at + 86400
    )


def _accepted(state: st.State, job_id: str, key: str, at: float) -> None:
    state.service.api_jobs[job_id] = se.ApiJob(
        job_id=job_id,
        labels={},
        idempotency_key=key,
        input_assets={},
        accepted_at=at,
        expires_at=at + 86400,
    )


def test_only_a_jobs_claim_with_no_job_of_it_is_released() -> None:
    """A jobs claim whose job was accepted with it stays; one with no job goes; an upload's
    claim (no job ever) stays."""
    state = st.initial_state()
    _claim(state, "kept", 10.0)
    _accepted(state, "j1", "kept", 10.0)
    _claim(state, "torn", 20.0)
    _claim(state, "upload", 30.0, scope="assets")
    released = se.claims_without_job(state, 40.0)
    assert [(e.key, e.scope, e.reason, e.at) for e in released] == [
        ("torn", "jobs", se.KEY_NOT_ACCEPTED, 40.0)
    ]


def test_a_job_of_an_older_claim_of_the_same_key_does_not_keep_a_torn_claim() -> None:
    """The key's first claim expired and its job stays listed: the new claim, torn, is
    still released."""
    state = st.initial_state()
    _accepted(state, "old", "reused", 10.0)
    _claim(state, "reused", 100_000.0)
    assert [e.key for e in se.claims_without_job(state, 100_001.0)] == ["reused"]
