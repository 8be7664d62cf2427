"""``run``: bad input is one line and launches nothing; the embedded run ends with a summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conjure_actors.cli import main


def _run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["run", *args])
    err = capsys.readouterr().err
    return code, err


@pytest.fixture(autouse=True)
def _no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith(("RUNCOMFY_", "CONJURE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def _one_line_error(code: int, err: str) -> None:
    assert code != 0
    assert err.startswith("error: ")
    assert err.count("\n") == 1, err
    assert "Traceback" not in err


def test_missing_workflow_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A workflow path that does not exist: one line, non-zero, nothing launched."""
    code, err = _run_cli([str(tmp_path / "nope.json")], capsys)
    _one_line_error(code, err)
    assert "not found" in err
    assert not (tmp_path / "runs").exists()


def test_invalid_workflow(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A graph with a dangling link is refused with every problem on one line."""
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"1": {"class_type": "SaveImage", "inputs": {"images": ["9", 0]}}}))
    code, err = _run_cli([str(bad)], capsys)
    _one_line_error(code, err)
    assert "workflow has" in err


def test_ui_format_workflow_gets_a_hint(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A UI-format export (nodes/links) is refused with a hint to export the API format."""
    ui = tmp_path / "ui.json"
    ui.write_text(json.dumps({"nodes": [], "links": [], "version": 0.4}))
    code, err = _run_cli([str(ui)], capsys)
    _one_line_error(code, err)


def test_unreadable_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """An image that cannot be read: one line naming it."""
    code, err = _run_cli(["--image", str(tmp_path / "missing.png")], capsys)
    _one_line_error(code, err)
    assert "missing.png" in err


@pytest.mark.parametrize("budget", ["0.001", "0"])
def test_budget_below_one_launch(capsys: pytest.CaptureFixture[str], budget: str) -> None:
    """A budget smaller than one machine lease is refused before anything starts, as bad
    input (exit 2: it was 1, a BudgetError)."""
    code, err = _run_cli(["--budget", budget], capsys)
    _one_line_error(code, err)
    assert code == 2
    assert "below one machine lease" in err


def test_bad_set_syntax(capsys: pytest.CaptureFixture[str]) -> None:
    """A malformed --set is a one-line usage error."""
    code, err = _run_cli(["--set", "nonsense"], capsys)
    _one_line_error(code, err)


def test_bad_config_value(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """A bad value in conjure.toml names its key."""
    (tmp_path / "conjure.toml").write_text("[pool]\nmax_machines = 'many'\n")
    code, err = _run_cli([], capsys)
    _one_line_error(code, err)
    assert "pool.max_machines" in err


@pytest.mark.slow
def test_embedded_run_end_to_end(tmp_path: Path) -> None:
    """No args, no credentials: the example runs on the embedded simulated cloud, says so
    first (and how much faster than real it runs), ends with a summary, writes a depth PNG
    and a GLB and a 0600 log; exit 0."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    proc = subprocess.run(
        [sys.executable, "-m", "conjure_actors", "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    first = proc.stderr.splitlines()[0]
    assert "embedded simulated cloud" in first
    assert "100x faster than a real machine" in first
    assert "jobs: 1 (1 succeeded" in proc.stderr
    assert "cost: $" in proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines[0]["type"] == "run.banner"
    assert any(line.get("type") == "job.succeeded" for line in lines)
    files = sorted(p.suffix for p in (tmp_path / "out").glob("job-*/**/*") if p.is_file())
    assert files == [".glb", ".png"]
    logs = list((tmp_path / "runs").glob("*.log"))
    assert len(logs) == 1
    assert logs[0].stat().st_mode & 0o777 == 0o600
    assert "Traceback" not in proc.stderr


def _runcomfy_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RUNCOMFY_USER_ID", "user")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "token")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("CONJURE_DEV_STATE_FILE", str(tmp_path / "dev.json"))


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_runcomfy_without_a_workflow_version_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """RunComfy, no --workflow-version and no dev machine: one line saying the three ways."""
    _runcomfy_env(monkeypatch, tmp_path)
    code, err = _run_cli([], capsys)
    _one_line_error(code, err)
    assert "--workflow-version" in err
    assert "machine up" in err


@pytest.mark.slow
async def test_runcomfy_takes_the_dev_machines_workflow_version(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """After `machine up --workflow-version V`, `run` on RunComfy needs no version: V."""
    from conjure_actors.commands.machine import DevMachine
    from conjure_actors.commands.run import _cloud
    from conjure_actors.config import load_config

    _runcomfy_env(monkeypatch, tmp_path)
    dev = DevMachine(
        server_id="s",
        url="http://127.0.0.1:9",
        server_type="medium",
        workflow_version="wv-dev",
        service_ready_at=None,
        estimated_stopping_at=None,
        rate_micros_per_hour=0,
        price_table_version="v",
        launched_at=0.0,
    )
    (tmp_path / "dev.json").write_text(dev.to_json())
    async with _cloud(load_config()) as (config, mode, _http, _ws, banner):
        assert (mode, config.runcomfy.workflow_version) == ("runcomfy", "wv-dev")
        assert "wv-dev" in banner


def test_unpriced_server_type_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """A server type the price table cannot bill: refused before anything starts."""
    code, err = _run_cli(["--server-type", "gigantic"], capsys)
    _one_line_error(code, err)
    assert err.startswith("error: --server-type: no price for server type 'gigantic'")
    assert "medium" in err


def _crash_inside_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make the run fail with an unexpected error from inside trio (a bug, a bad answer)."""
    import conjure_actors.commands.run as run_cmd

    async def broken(*args: object, **kwargs: object) -> int:
        raise ExceptionGroup("nursery", [KeyError("outputs")])

    monkeypatch.setattr(run_cmd, "_run", broken)


def test_an_unexpected_error_is_one_line_naming_debug(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unexpected exception (inside an exception group) is one line that names --debug."""
    _crash_inside_the_run(monkeypatch)
    code, err = _run_cli([], capsys)
    banner, last = err.splitlines()  # the banner (where it runs), then the error
    assert "embedded simulated cloud" in banner
    _one_line_error(code, last + "\n")
    assert "KeyError: 'outputs'" in last
    assert "--debug" in last


def test_debug_shows_the_traceback(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With --debug the original exception propagates (its traceback is shown)."""
    _crash_inside_the_run(monkeypatch)
    with pytest.raises(ExceptionGroup):
        main(["--debug", "run"])


@pytest.mark.slow
def test_a_full_disk_mid_run_is_one_line_naming_the_machines_it_stopped(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The log's disk fills up mid-run: no traceback; one line says the log's disk is full
    (no exception class), which machines were stopped anyway, and how to go on; exit 1."""
    import eventlog
    from eventlog.writer import LogWriter

    original = LogWriter.stage_many
    seen: list[str] = []

    def stage_many(self: Any, events: Any, *args: Any, **kwargs: Any) -> Any:
        events = list(events)
        seen.extend(type(e).__name__ for e in events)
        if "ExecutionStarted" in seen:
            raise eventlog.DiskFullError(self.path, "No space left on device")
        return original(self, events, *args, **kwargs)

    monkeypatch.setattr(LogWriter, "stage_many", stage_many)
    code, err = _run_cli(["--json"], capsys)
    banner, last = err.splitlines()
    assert "embedded simulated cloud" in banner
    _one_line_error(code, last + "\n")
    assert "run stopped: the disk holding its event log is full" in last
    assert "DiskFullError" not in last
    assert "stopped machines " in last
    assert "free space on that disk, then `run --resume " in last
