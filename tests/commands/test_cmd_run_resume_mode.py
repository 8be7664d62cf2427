"""run --resume of a RunComfy log without RunComfy credentials is refused: that run's
machines and launches are on RunComfy, and the simulated cloud cannot stop them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from bad_input_support import log_with_a_launch_in_flight

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain import machines_policy

pytestmark = pytest.mark.usefixtures("no_credentials")


def test_resume_of_a_runcomfy_log_without_credentials_does_not_say_nothing_bills(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A RunComfy run crashed with a launch in flight (a machine RunComfy may have started,
    billing). `run --resume` from a shell without the credentials runs on the simulated
    cloud (nothing refuses the mode change) and 579bd74's line says the launch 'went to that
    run's embedded simulated cloud ... nothing of it bills': false, the log says RunComfy."""
    monkeypatch.setattr(machines_policy, "NOT_VISIBLE_GRACE", 0.05)  # no 60 s wait here
    log_with_a_launch_in_flight(tmp_path / "rc.log", "runcomfy", "wv-1", 600)
    code = main(["run", "--resume", "rc.log", "--json"])
    err = capsys.readouterr().err
    assert "nothing of it bills" not in err, err
    # and the RunComfy launch in flight must not be closed as failed against the simulator
    # (the machine it may have started would then be forgotten, billing)
    from conjure_actors.commands.replay_impl import fold_log

    state, _, _ = fold_log(str(tmp_path / "rc.log"))
    assert "k1" in state.launch_requests, (code, err)


def test_resume_of_a_simulated_log_closes_its_launches_in_flight_at_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A simulated run ended with a launch in flight: it went to that run's embedded cloud,
    gone with it. `run --resume` (a new embedded cloud) closes it at its reconcile, not
    after NOT_VISIBLE_GRACE (60 s of a real clock here), and says so first."""
    from conjure_actors.actors.pool import ORPHANED_LAUNCH
    from conjure_actors.commands.replay_impl import fold_log

    _simulated_log(tmp_path / "sim.log")
    code = main(["run", "--resume", "sim.log", "--json"])
    err = capsys.readouterr().err
    assert code == 0, err  # the log holds no job: nothing to resume, nothing failed
    assert "closed as failed at once" in err
    state, _, _ = fold_log(str(tmp_path / "sim.log"))
    assert state.launch_requests == {}
    records = eventlog.read(tmp_path / "sim.log", ev.Event)
    closed = [r.event for r in records if isinstance(r.event, ev.MachineLaunchFailed)]
    assert [c.reason for c in closed] == [ORPHANED_LAUNCH]


@pytest.mark.slow  # a serve process: start-up, then its stop
def test_serve_on_a_simulated_log_closes_its_launches_in_flight_at_once(tmp_path: Path) -> None:
    """serve started on a simulated log with a launch in flight (its embedded cloud ended
    with the process that made it) closes it at its reconcile, as run --resume does, not
    after NOT_VISIBLE_GRACE."""
    import signal
    import subprocess
    import sys

    from conjure_actors.actors.pool import ORPHANED_LAUNCH

    log = tmp_path / "serve.log"
    _simulated_log(log)
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [sys.executable, "-m", "conjure_actors", "serve", "--port", "0", "--log", str(log)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert "http://127.0.0.1:" in first, first
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-800:]
    records = eventlog.read(log, ev.Event)
    closed = [r.event for r in records if isinstance(r.event, ev.MachineLaunchFailed)]
    assert [c.reason for c in closed] == [ORPHANED_LAUNCH]


def test_resume_of_a_simulated_log_on_runcomfy_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A simulated run's launch in flight, resumed on RunComfy, would be matched against
    the account's machines by its marker alone (another run's machine adopted, stopped):
    refused in one line, the log left as it was."""
    from conjure_actors.commands.replay_impl import fold_log

    _simulated_log(tmp_path / "sim.log")
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u1")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "tok-123")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "http://127.0.0.1:9")
    code = main(["run", "--resume", "sim.log", "--workflow-version", "wv-1"])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "that run was on the embedded simulated cloud: resume it as it ran, without" in err
    assert "tok-123" not in err
    state, _, _ = fold_log(str(tmp_path / "sim.log"))
    assert "k1" in state.launch_requests


def _simulated_log(path: Path) -> None:
    log_with_a_launch_in_flight(path, "simulated", "wv-conjure-flux-mesh-1", 592)
