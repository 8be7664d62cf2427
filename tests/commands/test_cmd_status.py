"""``status LOG`` summarizes a run log; without anything to show it says so."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.clients.retry import RetryPolicy
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from tests.eventlog.eventlog_testtypes import refuse_to_open

pytestmark = pytest.mark.usefixtures("no_credentials")


def _log(path: Path) -> None:
    with eventlog.open_writer(path, Event) as writer:
        writer.append(ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=1.0))
        writer.append(ev.JobSubmitted(job_id="j1", workflow_sha256="w", at=1.0))
        writer.append(ev.JobQueued(job_id="j1", at=1.0))
        writer.append(ev.JobFailed(job_id="j1", error_type="X", message="boom", at=2.0))
        writer.append(
            ev.MachineStopped(
                server_id="s1", stopped_at=10.0, billed_seconds=10, cost_micros=2750, at=10.0
            )
        )


def test_status_of_a_log(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A run log: jobs by status, machines and the bill."""
    _log(tmp_path / "r.log")
    assert main(["status", str(tmp_path / "r.log")]) == 0
    out = capsys.readouterr().out
    assert "1 failed" in out
    assert "machine s1" in out
    assert "$0.0028" in out


def test_status_names_the_budget_as_the_run_summary_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run under a budget: its cost line says of what budget (it said none)."""
    path = tmp_path / "r.log"
    with eventlog.open_writer(path, Event) as writer:
        writer.append(ev.BudgetSet(limit_micros=10_000, at=1.0))
        writer.append(
            ev.MachineStopped(
                server_id="s1", stopped_at=10.0, billed_seconds=10, cost_micros=2750, at=10.0
            )
        )
    assert main(["status", str(path)]) == 0
    assert "  cost: $0.0028 of the $0.0100 budget\n" in capsys.readouterr().out


def test_status_defaults_to_newest_run_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No argument: the newest log under ./runs/ is summarized."""
    (tmp_path / "runs").mkdir()
    _log(tmp_path / "runs" / "a.log")
    assert main(["status"]) == 0
    assert "runs/a.log" in capsys.readouterr().out


def test_status_with_nothing_to_show(capsys: pytest.CaptureFixture[str]) -> None:
    """No log, no ComfyUI, no credentials: one line saying so, exit 0."""
    assert main(["status"]) == 0
    assert "nothing to show" in capsys.readouterr().out


def test_status_missing_log_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A LOG that does not exist is a one-line usage error (in replay's words)."""
    assert main(["status", str(tmp_path / "absent.log")]) == 2
    assert "absent.log' does not exist; check the path" in capsys.readouterr().err


def test_status_says_why_a_job_failed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """status LOG (issue 14: it said "1 failed" only): the reason, on one line, by job id."""
    with eventlog.open_writer(tmp_path / "r.log", Event) as writer:
        writer.append(ev.WorkflowRegistered(sha256="w", name="w", graph_json="{}", at=1.0))
        writer.append(ev.JobSubmitted(job_id="j1", workflow_sha256="w", at=1.0))
        writer.append(ev.JobQueued(job_id="j1", at=1.0))
        message = "Prompt outputs failed validation\nInvalid image file: x.png"
        writer.append(
            ev.JobFailed(job_id="j1", error_type="prompt_rejected", message=message, at=2)
        )
    assert main(["status", str(tmp_path / "r.log")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "  job j1: failed: prompt_rejected: Prompt outputs failed validation Invalid image file:"
        " x.png"
    ) in lines


def test_status_of_a_log_this_user_may_not_read_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """No read permission was a PermissionError traceback (exit 1): one line, exit 2."""
    _log(tmp_path / "r.log")
    refuse_to_open(monkeypatch, tmp_path / "r.log")
    assert main(["status", str(tmp_path / "r.log")]) == 2
    assert capsys.readouterr().err == (
        f"error: cannot read event log {str(tmp_path / 'r.log')!r}: Permission denied; give"
        " this user read access to it, or run as its owner\n"
    )


@pytest.mark.parametrize("header", [False, True])
def test_status_of_a_log_without_records_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], header: bool
) -> None:
    """A 0-byte (or header-only) log printed a run of 0 jobs, exit 0; said as replay says it."""
    path = tmp_path / "empty.log"
    if header:
        eventlog.open_writer(path, Event).close()
    else:
        path.write_bytes(b"")
    assert main(["status", str(path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert captured.err.endswith(": no run to show\n")


def _launched_s1(path: Path, mode: str) -> Path:
    """A log of a run on ``mode`` that launched machine ``s1`` (a medium, lease 600 s)."""
    with eventlog.open_writer(path, Event) as writer:
        writer.append(ev.SystemStarted(run_id="r", version="0", mode=mode, at=0.0))
        writer.append(
            ev.MachineLaunchRequested(
                request_key="k",
                server_type="medium",
                workflow_version="wv",
                estimated_duration=600,
                at=0.0,
            )
        )
        writer.append(ev.MachineLaunched(request_key="k", server_id="s1", at=1.0))
    return path


def test_status_of_a_crashed_run_bills_its_running_machine_as_replay_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A machine still running at the end of a crashed run's log is shown at what it had
    cost by its last record (replay's ``billed``), not at $0 (no accrual logged yet)."""
    path = _launched_s1(tmp_path / "r.log", "runcomfy")
    with eventlog.open_writer(path, Event) as writer:
        writer.append(
            ev.MachineReady(
                server_id="s1",
                service_ready_at=10.0,
                estimated_stopping_at=610.0,
                rate_micros_per_hour=990_000,
                price_table_version="t",
                at=10.0,
            )
        )
        writer.append(ev.MachineStopping(server_id="s1", reason="done", at=21.0))
    assert main(["replay", str(path), "--json"]) == 0
    billed = json.loads(capsys.readouterr().out)["billed"]
    assert billed["total_micros"] == 3025  # 11 s at $0.99/h
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine s1 (runcomfy): stopping, $0.0030" in out
    assert "cost: $0.0030 (the ledger accrued $0.0000)" in out


def test_status_of_a_comfyui_url_with_a_query_is_one_line_that_does_not_show_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As run says it: the query (a token, maybe) is refused unshown."""
    code = main(["status", "--comfyui-url", "http://127.0.0.1:1/?token=s3cret"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "a query or fragment" in err
    assert "s3cret" not in err


def test_status_of_a_comfyui_that_does_not_answer_names_no_exception_class(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ComfyUI not listening: what status asked and why it failed, in words (it said
    "(ConnectError)")."""
    # (Its retries, as run's, without their pauses: this test asks for the words only.)
    monkeypatch.setattr(RetryPolicy, "delay", lambda self, attempt, rng: 0.0)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # (closed: nothing listens there)
    code = main(["status", "--comfyui-url", f"http://127.0.0.1:{port}/comfy"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == (
        f"error: the ComfyUI at http://127.0.0.1:{port} does not answer GET"
        " /comfy/system_stats (no connection): is it running?\n"
    )


def test_status_labels_a_machine_of_the_embedded_simulated_cloud_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A simulated run's machine was listed "(runcomfy)" while the run's own summary says
    "machines: 1 used (simulated)": status says "(simulated)" too."""
    path = _launched_s1(tmp_path / "r.log", "simulated")
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "machine s1 (simulated): " in out, out
    assert "(runcomfy)" not in out, out


def test_replay_labels_a_machine_of_the_embedded_simulated_cloud_simulated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """replay's machines table said "runcomfy" for a simulated run's machine, as status did."""
    path = _launched_s1(tmp_path / "r.log", "simulated")
    assert main(["replay", str(path), "--at", "3"]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if line.split()[:1] == ["s1"])
    assert row.split()[1] == "simulated", out
