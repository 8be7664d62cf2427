"""``status LOG`` summarizes the log alone, credentials set or not: a check (``status LOG ||
alert``) does not fail because the RunComfy account is rate limited, and a ``watch`` of it
does not spend the account's rate limit that a serve on it needs (QA11 F3). ``--account``
lists the account's machines with the log; without LOG the account is listed as before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bad_input_support import one_line_usage_error
from test_cmd_status import _log

from conjure_actors.cli import main
from conjure_actors.commands import status


@pytest.fixture
def asked(monkeypatch: pytest.MonkeyPatch, no_credentials: None) -> list[dict[str, Any]]:
    """Credentials set (as on serve's host); each listing of the cloud recorded, not sent."""
    for name in ("RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN"):
        monkeypatch.setenv(name, "x")
    calls: list[dict[str, Any]] = []

    async def show_cloud(config: Any, **what: Any) -> None:
        calls.append(what)

    monkeypatch.setattr(status, "_show_cloud", show_cloud)
    return calls


def test_status_of_a_log_asks_nothing_of_the_account(
    asked: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    _log(Path("r.log"))
    assert main(["status", "r.log"]) == 0
    assert "1 failed" in capsys.readouterr().out
    assert asked == []


def test_account_lists_the_accounts_machines_with_the_log(
    asked: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    _log(Path("r.log"))
    assert main(["status", "r.log", "--account"]) == 0
    assert "1 failed" in capsys.readouterr().out
    assert asked == [{"comfyui": None, "account": True}]


def test_without_a_log_the_account_is_listed_as_before(asked: list[dict[str, Any]]) -> None:
    Path("runs").mkdir()
    _log(Path("runs") / "r.log")
    assert main(["status"]) == 0
    assert asked == [{"comfyui": None, "account": True}]


@pytest.mark.usefixtures("no_credentials")
def test_account_without_credentials_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    _log(Path("r.log"))
    err = one_line_usage_error(main(["status", "r.log", "--account"]), capsys.readouterr().err)
    assert "--account: no RunComfy credentials" in err


@pytest.mark.usefixtures("no_credentials")
def test_half_a_credential_set_is_no_matter_for_a_log_alone(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """RUNCOMFY_USER_ID without its token: a status of a log (which asks no account) reads
    it; the half set is said when the account is asked for (--account)."""
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u")
    _log(Path("r.log"))
    assert main(["status", "r.log"]) == 0
    assert "1 failed" in capsys.readouterr().out
    assert main(["status", "r.log", "--account"]) == 2
    assert "RUNCOMFY_API_TOKEN is not" in capsys.readouterr().err
