"""``run --json | head``: once stdout's reader has left, the run stops in order, as on a
signal (machines stopped, unfinished jobs left for --resume, ``SystemStopped``), and exits
141 (128 + SIGPIPE). The broken pipe used to drop the live view and let the run go on unseen
to its end (or, on the banner, be one ``error: BrokenPipeError`` line)."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.run import JsonSink
from conjure_actors.domain import events as ev

pytestmark = pytest.mark.usefixtures("no_credentials")


class ReaderLeaves(io.StringIO):
    """A stdout whose reader leaves once a line with ``after`` was written to it."""

    def __init__(self, after: str) -> None:
        super().__init__()
        self.after = after
        self.gone = False

    def write(self, text: str) -> int:
        if self.gone:
            raise BrokenPipeError(32, "Broken pipe")
        self.gone = self.after in text
        return super().write(text)

    def flush(self) -> None:
        if self.gone:
            raise BrokenPipeError(32, "Broken pipe")


def _events(log: Path) -> list[ev.Event]:
    return [r.event for r in eventlog.read(log, ev.Event)]


@pytest.mark.slow  # ~4 s: a run on the embedded simulated cloud, up to a machine ready
def test_a_run_whose_reader_left_stops_its_machines_and_exits_141(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Mid-run: every machine launched is stopped, the job is left for --resume."""
    monkeypatch.setattr(sys, "stdout", ReaderLeaves('"type":"machine.ready"'))
    code = main(["run", "--json", "--log", "r.log"])
    err = capsys.readouterr().err
    assert code == 141, err
    assert "Traceback" not in err
    assert "stdout closed (broken pipe): stopping launches" in err
    events = _events(tmp_path / "r.log")
    launched = {e.server_id for e in events if isinstance(e, ev.MachineLaunched)}
    stopped = {e.server_id for e in events if isinstance(e, ev.MachineStopped)}
    assert launched
    assert launched == stopped
    assert [e.reason for e in events if isinstance(e, ev.SystemStopped)] == ["broken pipe"]
    assert any(isinstance(e, ev.JobInterrupted) for e in events)


@pytest.mark.slow  # ~4 s: a run on the embedded simulated cloud, to its end
def test_a_reader_that_leaves_after_the_jobs_ended_stops_nothing_and_says_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The run's work is over (it stops, reason done): the rest of the output is dropped,
    no "stdout closed ... stopping machines" line, exit 141; the job succeeded."""
    monkeypatch.setattr(sys, "stdout", ReaderLeaves('"type":"system.stopped"'))
    code = main(["run", "--json", "--log", "r.log"])
    err = capsys.readouterr().err
    assert code == 141, err
    assert "stdout closed" not in err
    events = _events(tmp_path / "r.log")
    assert [e.reason for e in events if isinstance(e, ev.SystemStopped)] == ["done"]
    assert any(isinstance(e, ev.JobSucceeded) for e in events)


def test_a_run_whose_reader_left_before_it_started_launches_nothing(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """On the banner (`run --json | true`): quiet, exit 141, no machine, no log left."""
    monkeypatch.setattr(sys, "stdout", ReaderLeaves("run.banner"))
    code = main(["run", "--json", "--log", "r.log"])
    err = capsys.readouterr().err
    assert code == 141, err
    assert "error" not in err
    assert not (tmp_path / "r.log").exists()


class Closed(io.StringIO):
    """A stream whose reader has left."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_closed_stderr_does_not_stop_the_run_as_a_closed_stdout() -> None:
    """The budget notice's print to a closed stderr: the event's line is on stdout and the
    run goes on (it was taken for stdout's reader leaving, and the run stopped)."""
    stdout_closed: list[bool] = []
    stream = io.StringIO()
    sink = JsonSink(stream, notices=Closed(), closed=lambda: stdout_closed.append(True))
    told = ev.BudgetLimitReached(
        what="renewal", spent_micros=37_425, committed_micros=40_197, limit_micros=90_000, at=1.0
    )
    sink.record(1, 1.0, told, None)
    sink.close()
    assert stdout_closed == []
    assert '"type":"cost.budget_limit_reached"' in stream.getvalue()


class Full(io.StringIO):
    """A stream on a full disk (``2>/dev/full``): every write fails with ENOSPC."""

    def write(self, text: str) -> int:
        raise OSError(28, "No space left on device")


@pytest.mark.slow  # ~4 s: a run on the embedded simulated cloud, to its end
def test_a_stderr_that_cannot_be_written_leaves_the_json_run_whole(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``run --json 2>/dev/full``: stderr is for people only; the run goes on to its end and
    stdout has every record, the summary last (it stopped at the banner, exit 1, nothing
    anywhere)."""
    stdout = io.StringIO()
    monkeypatch.setattr(sys, "stdout", stdout)
    monkeypatch.setattr(sys, "stderr", Full())
    code = main(["run", "--json", "--log", "r.log"])
    assert code == 0
    assert stdout.getvalue().splitlines()[-1].startswith('{"type": "run.summary", "ok": true')


@pytest.mark.slow
def test_a_stdout_that_cannot_be_written_is_one_line_naming_stdout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``run --json >/dev/full``: one line saying stdout cannot be written and why (it was
    "error: OSError: [Errno 28] ..."), exit 1, nothing launched, no log left."""
    monkeypatch.setattr(sys, "stdout", Full())
    code = main(["run", "--json", "--log", "r.log"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.splitlines()[-1] == (
        "error: cannot write the run's output to stdout (No space left on device): free space"
        " where stdout goes, or send it elsewhere"
    )
    assert not (tmp_path / "r.log").exists()
