"""A RunComfy API nothing answers at: one `error:` line that says where it tried and what to
check, exit 1 (an error, not bad input: the address is usually right and the network not)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from conjure_actors.cli import main
from conjure_actors.clients.retry import RetryPolicy


@pytest.mark.slow  # ~3 s: the account's rate limit spaces the five attempts
def test_status_against_an_unreachable_runcomfy_is_one_line_with_a_next_step(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """status: one `error:` line naming the API's address and what to check, exit 1."""
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, rng: 0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # (closed: nothing listens there)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u-unreachable")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "tok-SECRET-unreachable")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", f"http://127.0.0.1:{port}/api")
    code = main(["status"])
    err = capsys.readouterr().err
    assert code == 1, err
    assert err == (
        f"error: RunComfy list servers failed after 5 attempts: cannot connect to"
        f" http://127.0.0.1:{port}: check the network, and RUNCOMFY_API_BASE_URL"
        " (runcomfy.base_url)\n"
    )
