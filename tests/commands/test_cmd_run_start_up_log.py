"""The log of a new run whose start-up is refused, and of two runs started on one new
``--log`` at once: the retry is never blocked by a log that holds nothing to resume."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
import trio

import eventlog
from conjure_actors.actors.conjure import Conjure
from conjure_actors.cli import main
from conjure_actors.commands.run import _open_run_journal
from conjure_actors.domain import events as ev
from conjure_actors.errors import UsageError

pytestmark = pytest.mark.usefixtures("no_credentials")


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.mark.slow  # two runs' real-time retries against a closed port (about 3 s)
def test_a_run_whose_comfyui_does_not_answer_can_be_run_again(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The failed start-up left cu.log (its actors' start and stop only) and the same
    command then said the log exists, pass --resume; now the retry says the real cause."""
    cmd = ["run", "--comfyui-url", _closed_port_url(), "--log", "cu.log", "--json"]
    for _ in range(2):
        code = main(cmd)
        last = capsys.readouterr().err.splitlines()[-1]
        assert (code, last.startswith("error: the ComfyUI at ")) == (2, True), last
        assert last.endswith("does not answer GET /system_stats (no connection): is it running?")
        assert sorted(p.name for p in Path().iterdir() if p.name.startswith("cu.log")) == []


def test_a_log_with_a_job_is_never_removed(tmp_path: Path) -> None:
    """A new run that fails once a job is in its log keeps the log (--resume has it)."""

    async def fail_after_a_job() -> None:
        async with _open_run_journal(tmp_path / "j.log", time.time, fresh=True) as journal:
            await journal.append(
                ev.JobSubmitted(job_id="j1", workflow_sha256="0" * 64, at=time.time())
            )
            raise RuntimeError("later")

    with pytest.raises(ExceptionGroup) as failed:  # (from the journal's nursery)
        trio.run(fail_after_a_job)
    assert failed.group_contains(RuntimeError, match="later")
    assert (tmp_path / "j.log").is_file()


def _fail_after(tmp_path: Path, *events: object) -> Path:
    """A new run's journal that appends ``events``, then fails: its log path."""
    path = tmp_path / "j.log"

    async def fail() -> None:
        async with _open_run_journal(path, time.time, fresh=True) as journal:
            for event in events:
                await journal.append(event)
            raise RuntimeError("later")

    with pytest.raises(ExceptionGroup):
        trio.run(fail)
    return path


@pytest.mark.parametrize(
    "event",
    [
        ev.MachineLaunchRequested(
            request_key="k1",
            server_type="medium",
            workflow_version="v",
            estimated_duration=60,
            at=1.0,
        ),
        ev.MachineAttached(server_id="comfyui-1", kind="comfyui", at=1.0),
    ],
    ids=["a launch in flight", "an attached machine"],
)
def test_a_log_with_a_machine_or_a_launch_but_no_job_is_kept(tmp_path: Path, event: object) -> None:
    """Only a log of nothing that matters is removed: a launch in flight or a machine (a
    RunComfy server may bill) stays for --resume, though the log holds no job."""
    assert _fail_after(tmp_path, event).is_file()


def test_a_new_run_that_ends_without_an_error_and_records_nothing_leaves_no_log(
    tmp_path: Path,
) -> None:
    """A signal during start-up ends the run without an exception: its log (the actors'
    start and stop only) is removed all the same, or the retry is refused ("pass --resume")
    and the resume says there is nothing to resume."""
    path = tmp_path / "s.log"

    async def stopped() -> None:
        async with _open_run_journal(path, time.time, fresh=True) as journal:
            assert path.is_file()
            assert journal.last_seq == 0

    trio.run(stopped)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


async def test_a_run_that_loses_the_race_for_a_new_log_is_one_line(tmp_path: Path) -> None:
    """Two runs on one new --log at once: the loser was "LogLockedError: ... (run with
    --debug for the traceback)", exit 1; now the clean line of a log in use (exit 2)."""
    path = tmp_path / "race.log"
    with (
        eventlog.open_writer(path, ev.Event, sync="none"),  # the winner holds the lock
        pytest.raises(UsageError, match=r"is writing this log \(it holds its lock\): stop it"),
    ):
        async with _open_run_journal(path, time.time, fresh=True):
            pytest.fail("opened a log another run holds")


async def test_a_new_log_written_meanwhile_is_not_appended_to(tmp_path: Path) -> None:
    """A run that found --log free, but another wrote it since, refuses it untouched."""
    path = tmp_path / "race.log"
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many([ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0)])
    before = path.read_bytes()
    with pytest.raises(UsageError, match="another run wrote this log meanwhile"):
        async with _open_run_journal(path, time.time, fresh=True):
            pytest.fail("opened a log another run wrote")
    assert path.read_bytes() == before


def test_resume_of_a_log_without_a_job_says_nothing_to_resume_and_exits_0(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run --resume of a log whose run never submitted a job exited 1, as if a job had
    failed: there is nothing to resume, said in one line, and nothing failed (exit 0, the
    summary's "ok" true, as README's exit codes say of a run where no job failed)."""
    with eventlog.open_writer(Path("empty.log"), ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0),
                ev.SystemStopped(reason="error", at=2.0),
            ]
        )
    code = main(["run", "--resume", "empty.log", "--json"])
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["type"] == "run.summary"
    assert (code, summary["ok"]) == (0, True)
    assert [line for line in err.splitlines() if "nothing to resume" in line] == [
        "nothing to resume: empty.log holds no job (its run stopped before it submitted one):"
        " start a new run with another --log, or remove this log first"
    ]


def test_resume_of_a_log_without_a_job_whose_machine_may_still_run_exits_1(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Such a resume is there to reconcile the run's machines: one whose stop it could not
    confirm is no success (exit 1, "ok" false, the machine named), not a clean exit 0."""

    async def stops_nothing(self: Conjure, reason: str = "done") -> list[str]:
        return ["m-still-up"]

    monkeypatch.setattr(Conjure, "shutdown", stops_nothing)
    with eventlog.open_writer(Path("empty.log"), ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0),
                ev.SystemStopped(reason="error", at=2.0),
            ]
        )
    code = main(["run", "--resume", "empty.log", "--json"])
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    (summary,) = [r for r in records if r["type"] == "run.summary"]
    assert (code, summary["ok"]) == (1, False)
    assert "machines that may still be running: m-still-up" in json.dumps(records)
