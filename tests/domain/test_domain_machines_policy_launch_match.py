"""Which listed servers may be a launch in flight's (``machines_policy.launch_candidates``)
and the marker a new launch draws (``launch_duration``): QA session 29, H9."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.machines_policy import (
    GONE_STATUSES,
    LAUNCH_MARKER_SHARE,
    LAUNCH_TIE_SKEW,
    Listed,
    ambiguous_launch_reason,
    launch_candidates,
    launch_duration,
    matches_intent,
)
from conjure_actors.domain.state import LaunchRequest

AT = 1_800_000_000.0


def _req(marker: int = 583) -> LaunchRequest:
    return LaunchRequest(
        request_key="k1",
        server_type="medium",
        workflow_version="v1",
        estimated_duration=marker,
        max_jobs=1,
        at=AT,
    )


_listed = st.builds(
    Listed,
    server_id=st.sampled_from(["a", "b", "c", "d", "e"]),
    status=st.sampled_from(["Starting", "Ready", "Initializing", *sorted(GONE_STATUSES)]),
    server_type=st.sampled_from([None, "medium", "large"]),
    workflow_version_id=st.sampled_from([None, "v1", "v2"]),
    estimated_duration=st.sampled_from([None, 583, 584, 600]),
    service_ready_at=st.one_of(st.none(), st.floats(min_value=AT - 3600, max_value=AT + 3600)),
)


@given(
    listed=st.lists(_listed, max_size=6, unique_by=lambda s: s.server_id),
    known=st.sets(st.sampled_from(["a", "b", "c", "d", "e"])),
    first=st.dictionaries(
        st.sampled_from(["a", "b", "c", "d", "e"]),
        st.floats(min_value=AT - 3600, max_value=AT + 3600),
    ),
)
def test_a_candidate_echoes_the_marker_and_nothing_rules_it_out(
    listed: list[Listed], known: set[str], first: dict[str, float]
) -> None:
    """Every candidate echoes the intent's marker, is not a machine of the log, not on its
    way out, not listed before the intent, and not Ready before it (beyond the clocks'
    skew); every listed server that passes all of these is one."""
    req = _req()
    found = launch_candidates(req, listed, known=known, first_listed=first)
    for s in listed:
        ok = (
            matches_intent(
                req,
                server_type=s.server_type,
                workflow_version_id=s.workflow_version_id,
                estimated_duration=s.estimated_duration,
            )
            and s.server_id not in known
            and s.status not in GONE_STATUSES
            and first.get(s.server_id, AT) >= AT
            and (s.service_ready_at is None or s.service_ready_at >= AT - LAUNCH_TIE_SKEW)
        )
        assert (s in found) == ok


@given(ready_before=st.floats(min_value=LAUNCH_TIE_SKEW + 0.01, max_value=30 * 86400))
def test_a_server_ready_before_the_intent_is_never_its_candidate(ready_before: float) -> None:
    """A machine is Ready minutes after its launch: one Ready before the launch was asked
    for (beyond the skew of two clocks) is another's, however well it echoes the marker."""
    s = Listed(
        server_id="a",
        status="Ready",
        server_type="medium",
        workflow_version_id="v1",
        estimated_duration=583,
        service_ready_at=AT - ready_before,
    )
    assert launch_candidates(_req(), [s], known=(), first_listed={}) == []


def test_a_server_the_log_knows_is_never_a_candidate() -> None:
    s = Listed(server_id="a", status="Starting", estimated_duration=583)
    assert launch_candidates(_req(), [s], known={"a"}, first_listed={}) == []
    assert launch_candidates(_req(), [s], known=set(), first_listed={}) == [s]


@given(ids=st.lists(st.text("0123456789abcdef", min_size=8, max_size=8), min_size=2, max_size=5))
def test_the_reason_of_an_ambiguous_launch_names_each_server_and_the_stop_command(
    ids: list[str],
) -> None:
    reason = ambiguous_launch_reason(ids)
    assert reason.startswith(f"{len(ids)} servers matched; not provably ours")
    assert all(sid in reason for sid in ids)
    assert "python -m conjure_actors machine down --server-id ID" in reason
    assert "no server found" not in reason


@given(
    lease=st.integers(min_value=2400, max_value=86_400),
    draw=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
@pytest.mark.slow
def test_a_long_lease_draws_its_marker_from_a_share_of_it(lease: int, draw: float) -> None:
    """A one-hour lease draws from 179 values, not 59 (two runs of one account on the same
    lease collide 3x less often), and stays within LAUNCH_MARKER_SHARE % of the lease."""
    d = launch_duration(lease, taken=(), draw=draw)
    assert lease - lease * LAUNCH_MARKER_SHARE // 100 < d < lease
    assert len({launch_duration(lease, taken=(), draw=i / 1000) for i in range(1000)}) > 100
