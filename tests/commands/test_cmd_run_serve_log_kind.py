"""``serve --log`` refuses a ``run``'s log and ``run --resume`` a ``serve``'s (one line, exit
2): ``serve`` ran a run log's unfinished jobs unseen (GET /api/v2/jobs listed none), and
``run --resume`` would run a serve log's API jobs, which no client could poll."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain import service_events as se

pytestmark = pytest.mark.usefixtures("no_credentials")


def _log(path: Path, *events: object) -> bytes:
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0),
                *events,
                ev.SystemStopped(reason="interrupted", at=9.0),
            ]
        )
    return path.read_bytes()


def test_serve_refuses_the_log_of_a_run(capsys: pytest.CaptureFixture[str]) -> None:
    """A run's job left queued in its log is not served (it would run, and bill, unseen)."""
    before = _log(
        Path("r.log"),
        ev.WorkflowRegistered(sha256="0" * 64, name="wf", graph_json="{}", at=2.0),
        ev.JobSubmitted(job_id="j1", workflow_sha256="0" * 64, at=3.0),
        ev.JobQueued(job_id="j1", at=3.0),
    )
    code = main(["serve", "--port", "0", "--log", "r.log"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --log r.log: that is the log of a `run` (1 job(s) ")
    assert "run --resume r.log" in err
    assert Path("r.log").read_bytes() == before
    assert not Path("r.log.blobs").exists()


def test_serve_refuses_the_log_of_a_finished_run_without_sending_it_to_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A run whose jobs all ended: nothing to resume, so the line does not say to resume it
    (run --resume would say there is nothing to do); serve wants a log of its own."""
    _log(
        Path("r.log"),
        ev.WorkflowRegistered(sha256="0" * 64, name="wf", graph_json="{}", at=2.0),
        ev.JobSubmitted(job_id="j1", workflow_sha256="0" * 64, at=3.0),
        ev.JobCancelled(job_id="j1", reason="user", at=4.0),
    )
    code = main(["serve", "--port", "0", "--log", "r.log"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --log r.log: that is the log of a `run` (1 job(s) ")
    assert "all ended" in err
    assert "--resume" not in err


def test_run_resume_refuses_the_log_of_serve(capsys: pytest.CaptureFixture[str]) -> None:
    """A serve log's API records are not resumed by run (its jobs are serve's to run)."""
    before = _log(Path("s.log"), se.ApiJobAccepted(job_id="j1", expires_at=99.0, at=2.0))
    code = main(["run", "--resume", "s.log", "--json"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --resume s.log: that is the log of `serve` ")
    assert Path("s.log").read_bytes() == before


def test_run_resume_refuses_a_serve_log_without_a_job_or_an_asset_yet(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A serve log with no job and no asset yet (its LOG.blobs/ beside it, which serve makes
    when it starts): run --resume appended a run's start to it and said "start a new run
    with another --log"; it is refused, saying serve --log LOG, the log left as it was."""
    before = _log(Path("s.log"))
    (Path("s.log.blobs") / "blobs").mkdir(parents=True)
    code = main(["run", "--resume", "s.log"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "that is the log of `serve`: start serve on it again" in err, err
    assert "python -m conjure_actors serve --log s.log" in err, err
    assert Path("s.log").read_bytes() == before
