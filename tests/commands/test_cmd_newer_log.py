"""A log a newer conjure_actors wrote (a record with an event tag this version does not
know) is refused in one line by replay, status and run --resume: upgrade to read it."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.run import one_line_error
from conjure_actors.errors import UsageError
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_replay import story, write

NEWER = (
    "event log {log!r} was written by a newer conjure_actors (event 'job.teleported' at"
    " record seq 7; this is conjure_actors"
)


class Teleported(msgspec.Struct, frozen=True, kw_only=True, tag="job.teleported"):
    """An event of a newer version (a tag this version's union does not have)."""

    job_id: str
    at: float


@pytest.fixture
def newer_log(tmp_path: Path, no_credentials: None) -> Path:
    """A good run log, then one record of a newer version, framed by eventlog's writer."""
    path = write(tmp_path / "run.log", story()[:-1])  # (a run that did not stop: resumable)
    with eventlog.open_writer(path, Teleported, sync="none") as writer:
        writer.append(Teleported(job_id="j1", at=0.0))
    return path


@pytest.mark.parametrize(
    "options", [[], ["--json"], ["--at", "7"], ["--check"], ["--follow"]], ids=" ".join
)
def test_replay_says_a_newer_version_wrote_the_log(
    newer_log: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Every replay mode: one line, exit 2, the tag, and what to do (upgrade)."""
    code = main(["replay", str(newer_log), *options])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert NEWER.format(log=str(newer_log)) in err
    assert "upgrade conjure_actors to read it" in err
    assert "upcaster" not in err  # the developer's hint is for --debug


@pytest.mark.parametrize("options", [[], ["--job", "j1"]], ids=" ".join)
def test_the_timeline_shows_the_records_before_a_newer_one_and_says_where_it_stops(
    newer_log: Path, options: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """The timeline streams (``replay LOG | head`` is not held up by a read of the whole
    log): the records before the newer one are shown, each true of its record, then the
    one line (exit 2) says the timeline stops there, so a partial timeline is not taken
    for the whole."""
    code = main(["replay", str(newer_log), *options])
    captured = capsys.readouterr()
    err = one_line_usage_error(code, captured.err)
    seqs = [int(line.split()[0]) for line in captured.out.splitlines()]
    assert seqs == ([1, 2, 3, 4, 5, 6] if not options else [3, 4, 6])
    assert NEWER.format(log=str(newer_log)) in err
    assert err.rstrip().endswith(
        "upgrade conjure_actors to read it (the timeline above stops before it)"
    )


def test_status_says_a_newer_version_wrote_the_log(
    newer_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """status: the same line as replay's, exit 2."""
    code = main(["status", str(newer_log)])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert NEWER.format(log=str(newer_log)) in err


def test_resume_refuses_a_newer_versions_log_before_it_starts(
    newer_log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """run --resume: the same line, exit 2, before the banner (no cloud started)."""
    code = main(["run", "--resume", str(newer_log)])
    captured = capsys.readouterr()
    err = one_line_usage_error(code, captured.err)
    assert NEWER.format(log=str(newer_log)) in err
    assert "running on" not in captured.out + captured.err


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
def test_debug_keeps_the_developers_hint(newer_log: Path) -> None:
    """--debug: the traceback's cause is eventlog's error (add the type, or an upcaster)."""
    with pytest.raises(UsageError) as raised:
        main(["--debug", "replay", str(newer_log)])
    assert isinstance(raised.value.__cause__, eventlog.UnknownEventError)
    assert "upcaster" in str(raised.value.__cause__)


def test_an_unknown_event_met_once_started_is_said_as_a_newer_log() -> None:
    """The generic error path (serve, which reads its log once started): the same words,
    as bad input, not the exception's class name."""
    said = one_line_error(eventlog.UnknownEventError(7, "job.teleported"))
    assert str(said).startswith("the event log was written by a newer conjure_actors")
    assert "UnknownEventError" not in str(said)


@pytest.fixture
def newer_format(tmp_path: Path, no_credentials: None) -> Path:
    """A good run log whose header says a newer eventlog format wrote it."""
    from eventlog import _format

    path = write(tmp_path / "run.log", story())
    data = bytearray(path.read_bytes())
    header = _format.header_bytes(_format.FORMAT_VERSION + 1)
    data[: len(header)] = header
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "command",
    [
        ["replay"],
        ["replay", "--at", "3"],
        ["replay", "--check"],
        ["replay", "--follow"],
        ["status"],
    ],
    ids=" ".join,
)
def test_a_newer_file_format_is_bad_input_in_one_line(
    newer_format: Path, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A newer file format, as run --resume says it: exit 2 (replay said it exit 1, as if
    it had stopped part way), eventlog's one line (upgrade to read it), the same for all."""
    code = main([command[0], str(newer_format), *command[1:]])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == (
        f"error: event log {str(newer_format)!r} has format version 2, written by a newer"
        " program than this one (it reads up to version 1): upgrade it to read the log\n"
    )
