"""A ``conjure.toml`` whose pool settings contradict each other refuses ``run`` and ``serve``
(tests/test_config_pairs.py), never the commands that run no pool: an operator stopping a
billing machine (``machine down``) or reading a log (``status LOG``) is not stopped by it."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
from test_cmd_status import _log

from conjure_actors.cli import main
from conjure_actors.commands import machine

CONTRADICTORY = "[pool]\nlease_seconds = 100\nrenew_margin = 180\n"


@pytest.fixture
def contradictory(monkeypatch: pytest.MonkeyPatch, no_credentials: None) -> None:
    Path("conjure.toml").write_text(CONTRADICTORY)


@pytest.mark.usefixtures("contradictory")
def test_machine_reads_its_config_past_contradictory_pool_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN"):
        monkeypatch.setenv(name, "x")
    args = argparse.Namespace(config=None, server_type=None, workflow_version=None)
    assert machine._config(args).pool.lease_seconds == 100


@pytest.mark.usefixtures("contradictory")
def test_status_of_a_log_reads_past_contradictory_pool_settings() -> None:
    _log(Path("r.log"))
    assert main(["status", "r.log"]) == 0


@pytest.mark.usefixtures("contradictory")
def test_run_is_refused_by_them(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--log", "x.log"]) == 2
    assert "pool.renew_margin" in capsys.readouterr().err
    assert not Path("x.log").exists()
