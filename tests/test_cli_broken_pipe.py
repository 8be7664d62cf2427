"""A pipe that closes early (``status LOG | head``) ends every command quietly, exit 141
(128 + SIGPIPE), in one place (``cli.main``): it used to be a ``BrokenPipeError`` traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import eventlog
from conjure_actors import cli
from conjure_actors.commands import status
from conjure_actors.domain.events import Event, SystemStarted

ROOT = Path(__file__).resolve().parent.parent


class Closed(io.StringIO):
    """A stdout whose reader has left (what it holds cannot be flushed)."""

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def reader_left(args: object) -> int:
    raise BrokenPipeError(32, "Broken pipe")


def test_a_command_whose_reader_left_exits_141_without_a_word(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The BrokenPipeError of a command's print: no traceback, no line, exit 141, stdout
    pointed at /dev/null (so that the interpreter's last flush cannot fail again)."""
    silenced: list[bool] = []
    monkeypatch.setattr(sys, "stdout", Closed())
    monkeypatch.setattr(status, "main", reader_left)
    monkeypatch.setattr(cli, "to_devnull", lambda stream: silenced.append(stream is sys.stdout))
    assert cli.main(["status", "x.log"]) == cli.EXIT_BROKEN_PIPE == 141
    assert capsys.readouterr().err == ""
    assert silenced == [True]


def test_a_pipe_whose_reader_left_with_nothing_to_flush_is_stdout_s(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real pipe as stdout, its reader gone, nothing buffered: still quiet, exit 141 (the
    pipe itself tells that its reader left)."""
    read, write = os.pipe()
    os.close(read)
    with open(write, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        monkeypatch.setattr(cli, "to_devnull", lambda stream: None)
        monkeypatch.setattr(status, "main", reader_left)
        assert cli.main(["status", "x.log"]) == cli.EXIT_BROKEN_PIPE
        monkeypatch.undo()
    assert capsys.readouterr().err == ""


def test_a_broken_pipe_that_is_not_stdout_s_is_one_error_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A BrokenPipeError of a socket or a subprocess's pipe while stdout is fine: one
    ``error:`` line, exit 1 (it was a silent 141, as if stdout's reader had left)."""
    monkeypatch.setattr(status, "main", reader_left)
    monkeypatch.setattr(cli, "to_devnull", lambda stream: pytest.fail("stdout is fine"))
    assert cli.main(["status", "x.log"]) == cli.EXIT_ERROR
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("error: [Errno 32] Broken pipe (a connection or pipe")


def test_debug_shows_the_broken_pipe(monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug keeps the traceback, as for every other error."""
    monkeypatch.setattr(status, "main", reader_left)
    with pytest.raises(BrokenPipeError):
        cli.main(["--debug", "status", "x.log"])


@pytest.mark.slow  # a subprocess
def test_status_into_a_closed_pipe_is_quiet(tmp_path: Path) -> None:
    """`status LOG | head` once head has gone: exit 141, nothing on stderr."""
    log = tmp_path / "r.log"
    with eventlog.open_writer(log, Event, sync="none") as writer:
        writer.append(SystemStarted(run_id="r", version="0", mode="simulated", at=1.0))
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "conjure_actors", "status", str(log)],
            cwd=tmp_path,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")
