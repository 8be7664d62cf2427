"""``replay --follow`` of a finished log whose tail a newer conjure_actors wrote: every
record it can read, in order, then the timeline's one line (upgrade), exit 2 (it printed
nothing: the follower raised before yielding the records read with the newer one)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_newer_log import NEWER, Teleported
from tests.commands.test_cmd_replay import story, write


@pytest.fixture
def finished_newer_log(tmp_path: Path, no_credentials: None) -> Path:
    """A run that stopped (its writer closed), then one record of a newer version."""
    path = write(tmp_path / "run.log", story())
    with eventlog.open_writer(path, Teleported, sync="none") as writer:
        writer.append(Teleported(job_id="j1", at=0.0))
    return path


@pytest.mark.parametrize("as_json", [False, True], ids=["text", "json"])
def test_follow_prints_every_readable_record_then_says_a_newer_version_wrote_the_rest(
    finished_newer_log: Path, as_json: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    """Records 1-6 in order, then one line: newer conjure_actors, upgrade, the timeline
    above stops before it; exit 2."""
    options = ["--json"] if as_json else []
    code = main(["replay", str(finished_newer_log), "--follow", "--poll", "0.01", *options])
    captured = capsys.readouterr()
    err = one_line_usage_error(code, captured.err)
    lines = captured.out.splitlines()
    seqs = [json.loads(line)["seq"] if as_json else int(line.split()[0]) for line in lines]
    assert seqs == [1, 2, 3, 4, 5, 6, 7]
    assert NEWER.format(log=str(finished_newer_log)).replace("seq 7", "seq 8") in err
    assert err.rstrip().endswith(
        "upgrade conjure_actors to read it (the timeline above stops before it)"
    )
