"""A job of ``serve`` that expired leaves the folded state (QA11 finding 8), not the log:
``replay --at`` a record before its expiry still shows it, and ``status`` still counts it
(the expired jobs' tally)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conjure_actors.cli import main

LOG = Path(__file__).resolve().parents[1] / "data" / "golden_v3_service.log"
EXPIRED = "00000000-0000-4000-8000-0000000000d1"  # expired by record 27


@pytest.mark.parametrize(("at", "shown"), [("26", True), ("27", False)])
def test_replay_at_a_record_before_the_expiry_shows_the_job(
    at: str, shown: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(LOG), "--at", at, "--json"]) == 0
    state = json.loads(capsys.readouterr().out)["state"]
    assert (EXPIRED in state["jobs"]) is shown
    assert (EXPIRED in state["service"]["api_jobs"]) is shown
    assert state["service"]["expired_tally"] == ({} if shown else {"succeeded": 1})


def test_status_counts_the_job_that_expired(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", str(LOG)]) == 0
    out = capsys.readouterr().out
    assert "  jobs: 2 (1 succeeded, 0 failed, 1 cancelled, 0 unfinished)" in out.splitlines()


def test_replay_json_of_the_expired_job_says_it_expired(capsys: pytest.CaptureFixture[str]) -> None:
    """``--job`` of a job that expired (its state is gone, not its records): one line that
    says so and how to see it, not "check the job id"."""
    assert main(["replay", str(LOG), "--job", EXPIRED, "--json"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"no job {EXPIRED} in {LOG} at seq 29: it expired (past serve's --retention)" in err
    assert "give --at a record before its expiry" in err
