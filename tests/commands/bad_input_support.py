"""Shared by the bad-input tests of ``run`` and ``serve``: the check of a one-line usage
error and a log to resume (their ``no_credentials`` fixture is in this folder's conftest)."""

from __future__ import annotations

import time
from pathlib import Path

import eventlog
from conjure_actors.domain import events as ev


def one_line_usage_error(code: int, err: str) -> str:
    """``err`` is one ``error: ...`` line, no traceback, and the exit code is 2."""
    assert "Traceback" not in err, err
    assert err.startswith("error: "), err
    assert err.count("\n") == 1, err
    assert code == 2, (code, err)
    return err


def log_with_a_launch_in_flight(
    path: Path, mode: str, workflow_version: str, estimated_duration: int
) -> None:
    """A log whose run (on ``mode``) ended with one launch in flight, ``k1``."""
    now = time.time()
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode=mode, at=now - 30),
                ev.MachineLaunchRequested(
                    request_key="k1",
                    server_type="medium",
                    workflow_version=workflow_version,
                    estimated_duration=estimated_duration,
                    at=now - 20,
                ),
            ]
        )
