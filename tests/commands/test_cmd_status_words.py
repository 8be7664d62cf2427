"""``status LOG``'s first line in the words a user needs (QA's N4): a corrupt log said as
replay says it, a serve's log called a serve log, a serve stopped by a signal says what
is left and what resumes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain.service_events import ApiJobAccepted
from tests.commands.test_cmd_replay import T0, WF, story

pytestmark = pytest.mark.usefixtures("no_credentials")


def _write(path: Path, events: list[Any]) -> Path:
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(events)
    return path


def _first_line(path: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["status", str(path)]) == 0
    return capsys.readouterr().out.splitlines()[0]


def _served(*, ended: bool) -> list[Any]:
    """A serve's log: two API jobs (one ended if ``ended``), then a stop on a signal."""
    events: list[Any] = [
        ev.SystemStarted(run_id="r", version="0", mode="simulated", at=T0),
        ev.WorkflowRegistered(sha256=WF, name="w", graph_json="{}", at=T0),
    ]
    for job in ("j1", "j2"):
        events += [
            ApiJobAccepted(job_id=job, expires_at=T0 + 3600, at=T0 + 1),
            ev.JobSubmitted(job_id=job, workflow_sha256=WF, at=T0 + 1),
            ev.JobQueued(job_id=job, at=T0 + 1),
        ]
    if ended:
        events.append(ev.JobCancelled(job_id="j2", reason="user", at=T0 + 2))
    return [*events, ev.SystemStopped(reason="interrupted", at=T0 + 3)]


def test_a_corrupt_log_is_said_as_replay_says_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status dmg.log said "cannot read run log dmg.log: event log 'dmg.log' is corrupt...":
    the log named twice. Now the journal's line alone (where, and how to salvage)."""
    path = _write(tmp_path / "dmg.log", story())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    code = main(["status", str(path)])
    err = capsys.readouterr().err
    assert code == 1, err  # as replay exits on a damaged log (documented), not 2 (bad input)
    assert err.count("\n") == 1, err
    assert err.startswith(f"error: event log {str(path)!r} is corrupt at byte offset"), err
    assert "eventlog salvage" in err
    assert "cannot read" not in err


def test_a_serve_stopped_by_a_signal_says_what_resumes_its_jobs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A serve that drained on SIGTERM said "run log ...: interrupted": now a serve log,
    how it stopped, the jobs it left and that serve --log resumes them."""
    path = _write(tmp_path / "s.log", _served(ended=False))
    assert _first_line(path, capsys) == (
        f"serve log {path}: stopped by SIGTERM or Ctrl-C (2 job(s) left unfinished:"
        f" `serve --log {path}` resumes them)"
    )


def test_a_serve_stopped_by_a_signal_with_every_job_ended_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    events = [e for e in _served(ended=True) if getattr(e, "job_id", None) != "j1"]
    path = _write(tmp_path / "s.log", events)
    assert _first_line(path, capsys) == (
        f"serve log {path}: stopped by SIGTERM or Ctrl-C (every job had ended)"
    )


def test_an_interrupted_run_says_what_finishes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run stopped with Ctrl-C and jobs left: run --resume finishes them."""
    events = [*story()[:-2], ev.SystemStopped(reason="interrupted", at=T0 + 6)]
    path = _write(tmp_path / "r.log", events)
    assert _first_line(path, capsys) == (
        f"run log {path}: interrupted (2 unfinished job(s): `run --resume {path}` finishes them)"
    )
