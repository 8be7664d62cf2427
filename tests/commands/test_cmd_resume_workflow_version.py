"""A RunComfy log resumed with credentials (``run --resume``, ``serve --log``) runs on the
workflow version the log holds: none given takes it (the banner says so), one given that is
not the log's is refused in one line before anything starts. No network: the run or the
service is replaced by a stub once the cloud is chosen (or the refusal comes first)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from bad_input_support import log_with_a_launch_in_flight, one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands import run as run_command
from conjure_actors.commands.replay_impl import fold_log
from conjure_actors.domain import events as ev
from conjure_actors.domain.state import apply, initial_state
from conjure_actors.errors import UsageError

pytestmark = pytest.mark.usefixtures("no_credentials")

TOKEN = "tok-resume-123"


class _Started(Exception):
    """The stub of the run or the service was reached: the cloud was chosen."""


@pytest.fixture
def credentials(no_credentials: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake RunComfy credentials aimed at a closed port; no dev machine recorded."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u1")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", TOKEN)
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "http://127.0.0.1:9")


@pytest.fixture
def started_run(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``run``'s work after the cloud is chosen, replaced: it keeps the config it got."""
    got: dict[str, Any] = {}

    async def fake_run(args: Any, config: Any, *rest: Any) -> int:
        got["config"] = config
        return 0

    monkeypatch.setattr(run_command, "_run", fake_run)
    return got


@pytest.fixture
def started_service(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """``serve``'s service, replaced: it keeps the config it got and stops there."""
    from conjure_actors.service import app

    got: dict[str, Any] = {}

    def fake_open_service(config: Any, **kwargs: Any) -> Any:
        got["config"] = config
        raise _Started("service reached")

    monkeypatch.setattr(app, "open_service", fake_open_service)
    return got


@pytest.mark.usefixtures("credentials")
def test_run_resume_without_a_version_takes_the_logs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, started_run: dict[str, Any]
) -> None:
    """Before: "RunComfy needs a workflow version" (exit 2) although the log holds wv-1."""
    log_with_a_launch_in_flight(tmp_path / "rc.log", "runcomfy", "wv-1", 600)
    code = main(["run", "--resume", "rc.log"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert started_run["config"].runcomfy.workflow_version == "wv-1"
    assert "workflow version wv-1 (the log's)" in err
    assert TOKEN not in err


@pytest.mark.usefixtures("credentials")
def test_run_resume_with_another_version_is_refused_before_it_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, started_run: dict[str, Any]
) -> None:
    """The launch in flight is matched against the account's servers by its version, and
    the resumed jobs were made for it: --workflow-version wv-2 on a wv-1 log is refused."""
    log = tmp_path / "rc.log"
    log_with_a_launch_in_flight(log, "runcomfy", "wv-1", 600)
    code = main(["run", "--resume", "rc.log", "--workflow-version", "wv-2"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "workflow version wv-1, not wv-2" in err
    assert "--workflow-version wv-1" in err
    assert TOKEN not in err
    assert started_run == {}
    state, last, _ = fold_log(str(log))
    assert last == 2
    assert "k1" in state.launch_requests


@pytest.mark.usefixtures("credentials")
def test_run_resume_with_the_logs_version_runs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, started_run: dict[str, Any]
) -> None:
    """The log's own version given is taken as given (the banner names no other)."""
    log_with_a_launch_in_flight(tmp_path / "rc.log", "runcomfy", "wv-1", 600)
    code = main(["run", "--resume", "rc.log", "--workflow-version", "wv-1"])
    err = capsys.readouterr().err
    assert code == 0, err
    assert started_run["config"].runcomfy.workflow_version == "wv-1"
    assert "(the log's)" not in err


@pytest.mark.usefixtures("credentials")
def test_serve_on_a_log_without_a_version_takes_the_logs(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, started_service: dict[str, Any]
) -> None:
    """serve --log on an existing RunComfy log, no version given: the log's (wv-1)."""
    log = tmp_path / "rc.log"
    log_with_a_launch_in_flight(log, "runcomfy", "wv-1", 600)
    code = main(["serve", "--log", str(log), "--port", "0"])
    err = capsys.readouterr().err
    assert "service reached" in err, (code, err)
    assert started_service["config"].runcomfy.workflow_version == "wv-1"


@pytest.mark.usefixtures("credentials")
def test_serve_on_a_log_with_another_version_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, started_service: dict[str, Any]
) -> None:
    """serve --log of a wv-1 log with a launch in flight and --workflow-version wv-2:
    refused in one line, nothing started, the log as it was."""
    log = tmp_path / "rc.log"
    log_with_a_launch_in_flight(log, "runcomfy", "wv-1", 600)
    code = main(["serve", "--log", str(log), "--port", "0", "--workflow-version", "wv-2"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert f"--log {log}: that run's" in err
    assert TOKEN not in err
    assert started_service == {}
    assert fold_log(str(log))[1] == 2


def _state(*events: Any) -> Any:
    state = initial_state()
    for event in events:
        apply(state, event)
    return state


def _stopped_machine_log() -> Any:
    """A RunComfy run whose one machine (wv-1) was stopped: nothing left to resume."""
    now = time.time()
    return _state(
        ev.SystemStarted(run_id="r1", version="0", mode="runcomfy", at=now - 60),
        ev.MachineLaunchRequested(
            request_key="k1",
            server_type="medium",
            workflow_version="wv-1",
            estimated_duration=600,
            at=now - 50,
        ),
        ev.MachineLaunched(request_key="k1", server_id="s1", at=now - 49),
        ev.MachineStopping(server_id="s1", reason="shutdown", at=now - 20),
        ev.MachineStopped(
            server_id="s1", stopped_at=now - 19, billed_seconds=0, cost_micros=0, at=now - 19
        ),
    )


def test_a_version_given_for_a_log_with_nothing_left_is_taken() -> None:
    """Nothing of the log's version is resumed (its machine stopped): another is fine."""
    from conjure_actors.commands.run import version_for_log

    assert version_for_log(_stopped_machine_log(), "wv-2", "--log x") == "wv-2"


def test_no_version_for_a_log_with_nothing_left_binds_none() -> None:
    """Nothing to resume: no version is imposed (the dev machine's, then the log's)."""
    from conjure_actors.commands.run import version_for_log

    assert version_for_log(_stopped_machine_log(), "", "--log x") is None


def test_a_log_with_work_of_two_versions_needs_one_named() -> None:
    """Two launches in flight of two versions: none given is refused, naming both; either
    given is taken (each job and launch keeps its own version)."""
    from conjure_actors.commands.run import version_for_log

    now = time.time()
    state = _state(
        *(
            ev.MachineLaunchRequested(
                request_key=f"k{i}",
                server_type="medium",
                workflow_version=f"wv-{i}",
                estimated_duration=600,
                at=now - 50 + i,
            )
            for i in (1, 2)
        )
    )
    with pytest.raises(UsageError, match="wv-1, wv-2"):
        version_for_log(state, "", "--log x")
    assert version_for_log(state, "wv-2", "--log x") == "wv-2"


def test_an_events_file_is_read_for_its_version(tmp_path: Path) -> None:
    """read_log_state folds the log (None when there is none)."""
    from conjure_actors.commands.run import read_log_state

    assert read_log_state(tmp_path / "none.log") is None
    log = tmp_path / "rc.log"
    log_with_a_launch_in_flight(log, "runcomfy", "wv-1", 600)
    state = read_log_state(log)
    assert state.launch_requests["k1"].workflow_version == "wv-1"
    assert eventlog.inspect(log).has_records
