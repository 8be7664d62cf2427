"""``status LOG`` of a damaged log with a cloud configured: the log's problem is said, and
the account's machines are still listed (which bill now is what its user needs most: QA
H3b); without a cloud it is the one-line error it was."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from test_cmd_log_to_take_up import damage, left_billing

from conjure_actors.cli import main
from conjure_actors.commands import status


def test_a_damaged_log_still_lists_the_accounts_machines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNCOMFY_USER_ID", "user")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "token")
    listed: list[Any] = []

    async def show_cloud(config: Any, **asked: Any) -> None:
        listed.append(config)
        print("RunComfy: 1 machine(s)")

    monkeypatch.setattr(status, "_show_cloud", show_cloud)
    log = left_billing(Path("f11.log"))
    damage(log)
    code = main(["status", "f11.log"])
    out, err = capsys.readouterr()
    assert code == 1  # a damaged log's code, as replay's
    assert len(listed) == 1
    assert "RunComfy: 1 machine(s)" in out
    assert err.startswith("error: event log 'f11.log' is corrupt")
    assert "python -m eventlog salvage" in err


def test_without_a_cloud_a_damaged_log_is_the_one_line_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RUNCOMFY_USER_ID", raising=False)
    monkeypatch.delenv("RUNCOMFY_API_TOKEN", raising=False)
    log = left_billing(Path("f11.log"))
    damage(log)
    code = main(["status", "f11.log"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.count("\n") == 1
    assert "is corrupt" in err
