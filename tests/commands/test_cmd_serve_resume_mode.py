"""serve --log of a RunComfy log without RunComfy credentials is refused (exit 2, the log
left as it was): its machines and launches are on RunComfy, maybe billing."""

from __future__ import annotations

from pathlib import Path

import pytest
from bad_input_support import log_with_a_launch_in_flight, one_line_usage_error

from conjure_actors.cli import main
from conjure_actors.commands.replay_impl import fold_log

pytestmark = pytest.mark.usefixtures("no_credentials")


def test_serve_of_a_runcomfy_log_without_credentials_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Before, serve ran it on the simulated cloud: the RunComfy launch in flight was
    closed as failed (a machine it may have started forgotten, billing) and the log's mode
    became 'simulated', so a later run --resume without credentials was not refused."""
    log = tmp_path / "rc.log"
    log_with_a_launch_in_flight(log, "runcomfy", "wv-1", 600)
    code = main(["serve", "--log", str(log), "--port", "0"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "that run was on RunComfy" in err
    assert "--workflow-version wv-1" in err  # the log's: RunComfy needs one to resume
    state, _, _ = fold_log(str(log))
    assert "k1" in state.launch_requests
    assert state.system.mode == "runcomfy"
