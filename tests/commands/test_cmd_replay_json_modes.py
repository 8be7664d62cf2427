"""``replay --follow --json`` and ``replay --check --json`` write JSON (they printed text);
an option a mode would not use (``--diff --json``, ``--follow --at``) is refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain.state import State, apply, initial_state
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_replay import story, write


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return write(tmp_path / "run.log", story())


def test_follow_json_writes_one_object_per_record(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--follow --json: one JSON object per line, per record (seq, ts, type, fields)."""
    assert main(["replay", str(log), "--follow", "--json", "--poll", "0.01"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["seq"] for line in lines] == list(range(1, 8))
    assert lines[0]["type"] == "system.started"
    assert list(lines[2])[:3] == ["seq", "ts", "type"]  # as run --json writes events
    assert lines[2]["type"] == "job.submitted"
    assert lines[2]["job_id"] == "j1"


def test_follow_json_keeps_to_the_job(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--follow --json --job ID: only that job's records."""
    assert main(["replay", str(log), "--follow", "--json", "--job", "j1", "--poll", "0.01"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {line["job_id"] for line in lines} == {"j1"}


def test_check_json_writes_the_verdict(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check --json on a good log: one object, ok, with what was checked."""
    assert main(["replay", str(log), "--check", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is True
    assert verdict["log"] == str(log)
    assert (verdict["records"], verdict["last_seq"], verdict["lost_seqs"]) == (7, 7, [])
    assert verdict["snapshot_seq"] is None


def test_check_json_names_the_failure(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--check --json on a log whose snapshot disagrees: ok false, the failure, exit 1."""
    state = initial_state()
    for event in story()[:4]:
        apply(state, event)
    state.jobs["j1"].status = "running"
    eventlog.write_snapshot(f"{log}.snapshot", state, 4, State)
    assert main(["replay", str(log), "--check", "--json"]) == 1
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is False
    assert "jobs.j1.status: 'running' != 'queued'" in verdict["failure"]


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--diff", "OTHER", "--json"], "--json does nothing with --diff"),
        (["--follow", "--at", "3"], "--at does nothing with --follow"),
        (["--check", "--at", "3"], "--at does nothing with --check"),
        (["--check", "--job", "j1"], "--job does nothing with --check"),
        (["--snapshot", "S"], "--snapshot does nothing without --check"),
    ],
)
def test_an_option_the_mode_does_not_use_is_refused(
    log: Path, options: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not silently ignored: one line, exit 2."""
    options = [str(log) if word == "OTHER" else word for word in options]
    code = main(["replay", str(log), *options])
    assert said in one_line_usage_error(code, capsys.readouterr().err)


def test_check_json_gives_the_verdict_of_a_corrupt_log(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A flipped byte in the middle: the verdict still, ok false naming the offset, exit 1
    (it was the text error line alone)."""
    data = bytearray(log.read_bytes())
    data[len(data) // 2] ^= 0xFF
    log.write_bytes(bytes(data))
    assert main(["replay", str(log), "--check", "--json"]) == 1
    captured = capsys.readouterr()
    verdict = json.loads(captured.out)
    assert verdict["ok"] is False
    assert verdict["log"] == str(log)
    assert "corrupt at byte offset" in verdict["failure"]
    assert captured.err.startswith("error: ")  # still said, as without --json


def test_check_json_names_a_torn_tail(log: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A torn tail: ok (the records before it check out), exit 0, and the verdict says
    where it starts and how long it is (it was only a warning on stderr)."""
    size = log.stat().st_size
    with log.open("ab") as f:
        f.write(b"\x01\x02\x03\x04\x05")
    assert main(["replay", str(log), "--check", "--json"]) == 0
    verdict = json.loads(capsys.readouterr().out)
    assert verdict["ok"] is True
    assert verdict["torn_tail"] == {"offset": size, "bytes": 5}


def test_check_json_of_a_whole_log_has_no_torn_tail(
    log: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["replay", str(log), "--check", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["torn_tail"] is None


def test_check_json_gives_the_verdict_of_a_missing_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A log that cannot be checked at all: the verdict, ok false, with bad input's exit 2."""
    missing = tmp_path / "nope.log"
    assert main(["replay", str(missing), "--check", "--json"]) == 2
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["ok"], verdict["log"]) == (False, str(missing))
    assert "does not exist" in verdict["failure"]


def test_check_json_gives_the_verdict_of_a_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A directory given for the log: the verdict too (ok false), exit 2."""
    assert main(["replay", str(tmp_path), "--check", "--json"]) == 2
    verdict = json.loads(capsys.readouterr().out)
    assert (verdict["ok"], verdict["log"]) == (False, str(tmp_path))
    assert "directory" in verdict["failure"]
