"""``replay --follow`` says what a mistyped argument would leave silent: a job id no record
of the ended run is about (as the timeline says it; it printed nothing and exited 0), and
a log not there yet, waited for (it waited without a word)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from conjure_actors.cli import main
from tests.commands.bad_input_support import one_line_usage_error
from tests.commands.test_cmd_replay import story, write


@pytest.mark.parametrize("follow", [[], ["--follow", "--poll", "0.01"]], ids=["timeline", "follow"])
def test_a_job_id_no_record_is_about_is_said_once_the_run_has_ended(
    tmp_path: Path, no_credentials: None, follow: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A finished log (stopped, its writer gone), a job id none of its records names: one
    line, exit 2, the same words with and without --follow."""
    log = write(tmp_path / "run.log", story())
    code = main(["replay", str(log), *follow, "--job", "j-typo"])
    captured = capsys.readouterr()
    err = one_line_usage_error(code, captured.err)
    assert err == f"error: no event in {log} is about job j-typo: check the job id\n"
    assert captured.out == ""


def test_follow_of_a_job_the_log_names_ends_as_before(
    tmp_path: Path, no_credentials: None, capsys: pytest.CaptureFixture[str]
) -> None:
    """The job's records, exit 0."""
    log = write(tmp_path / "run.log", story())
    assert main(["replay", str(log), "--follow", "--poll", "0.01", "--job", "j1"]) == 0
    seqs = [int(line.split()[0]) for line in capsys.readouterr().out.splitlines()]
    assert seqs == [3, 4, 6]


def test_follow_of_a_log_not_there_yet_says_it_waits(
    tmp_path: Path,
    no_credentials: None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A path with no log yet is waited for (a run may create it), said on stderr first,
    so that a mistyped path is not a silent wait (it said nothing)."""
    import trio

    log = tmp_path / "later.log"
    run = trio.run

    def run_written_meanwhile(fn: Any, *args: Any, **kwargs: Any) -> Any:
        write(log, story())  # (a run writes it, ends and closes it, while follow waits)
        return run(fn, *args, **kwargs)

    monkeypatch.setattr(trio, "run", run_written_meanwhile)
    assert main(["replay", str(log), "--follow", "--poll", "0.01"]) == 0
    captured = capsys.readouterr()
    assert captured.err == (
        f"note: {log} does not exist yet: waiting for a run to write it (Ctrl-C stops)\n"
    )
    assert len(captured.out.splitlines()) == len(story())
