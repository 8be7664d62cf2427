"""``run --resume LOG`` without ``--out`` writes where the run wrote (the log says where), and
the summary names the folder the outputs are really in: a resume used to write to ``./out/``
and say "files under out" of outputs listed under the run's ``--out``."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.commands.run import keep_run_options, logged_out_dir, outputs_folder
from conjure_actors.domain import events as ev

pytestmark = pytest.mark.usefixtures("no_credentials")


def _write_log(path: Path, *events: ev.Event) -> None:
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(list(events))


def _started(at: float, out_dir: str | None = None) -> ev.SystemStarted:
    return ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=at, out_dir=out_dir)


def _saved(job_id: str, path: str, at: float) -> ev.OutputSaved:
    return ev.OutputSaved(
        job_id=job_id,
        node_id="9",
        filename=Path(path).name,
        path=path,
        size=1,
        sha256="0" * 64,
        kind="image",
        at=at,
    )


def test_a_resume_without_out_writes_to_the_out_the_log_recorded(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The run's --out, recorded at its start, is the resumed run's (it was ./out)."""
    now = time.time()
    o2 = tmp_path / "x" / "o2"
    _write_log(tmp_path / "r2.log", _started(now - 30, str(o2)))
    main(["run", "--resume", "r2.log", "--json"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["type"] == "run.summary"
    assert summary["out_dir"] == str(o2)
    assert not (tmp_path / "out").exists()
    starts = [r.event for r in eventlog.read(tmp_path / "r2.log", ev.Event)]
    assert [s.out_dir for s in starts if isinstance(s, ev.SystemStarted)] == [str(o2)] * 2


def test_a_given_out_wins_over_the_logged_one(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--out with --resume still says where this session writes."""
    _write_log(tmp_path / "r2.log", _started(time.time() - 30, str(tmp_path / "o2")))
    main(["run", "--resume", "r2.log", "--json", "--out", "o3"])
    summary = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert summary["out_dir"] == "o3"


def test_a_log_older_than_the_recorded_out_gives_the_folder_of_its_outputs(
    tmp_path: Path,
) -> None:
    """A start that recorded no out_dir: the folder of the last saved output stands in."""
    log = tmp_path / "old.log"
    _write_log(log, _started(1.0), _saved("job-1", "/tmp/x/o1/job-1/ComfyUI_0001.png", 2.0))
    assert logged_out_dir(log) == "/tmp/x/o1"


def test_a_log_that_says_no_folder_gives_none(tmp_path: Path) -> None:
    """No recorded out_dir and no output: the default applies (None here)."""
    log = tmp_path / "old.log"
    _write_log(log, _started(1.0))
    assert logged_out_dir(log) is None


def test_the_summary_names_the_folder_the_outputs_are_in() -> None:
    """A resumed finished run's outputs are under its --out, not this session's default."""
    job = SimpleNamespace(
        job_id="job-1",
        outputs=[SimpleNamespace(path=f"/tmp/x/o1/job-1/{n}.png") for n in range(4)],
    )
    state = SimpleNamespace(jobs={"job-1": job})
    assert outputs_folder(state, ["job-1"], Path("out")) == "/tmp/x/o1"
    assert outputs_folder(state, [], Path("out")) == "/tmp/x/o1"
    assert outputs_folder(SimpleNamespace(jobs={}), [], Path("out")) == "out"


def _args(resume: Path, **given: object) -> argparse.Namespace:
    options = {"out": None, "server_type": None, "max_machines": None, "idle_timeout": None}
    return argparse.Namespace(resume=str(resume), **{**options, **given})


def _started_with(at: float) -> ev.SystemStarted:
    return ev.SystemStarted(
        run_id="r1",
        version="0",
        mode="runcomfy",
        at=at,
        out_dir="/tmp/x/o1",
        server_type="2x-large",
        max_machines=2,
        idle_timeout=30.0,
    )


def test_a_resume_keeps_the_runs_machine_type_cap_and_idle_timeout(tmp_path: Path) -> None:
    """A run of at most 2 2x-large machines was resumed with the defaults: 4 medium ones
    launched at once (QA). The run's options, recorded at its start, are the resume's."""
    log = tmp_path / "r.log"
    _write_log(log, _started_with(1.0))
    args = _args(log)
    keep_run_options(args)
    assert (args.out, args.server_type, args.max_machines, args.idle_timeout) == (
        "/tmp/x/o1",
        "2x-large",
        2,
        30.0,
    )


def test_an_option_given_to_the_resume_wins_over_the_runs(tmp_path: Path) -> None:
    """--max-machines given to the resume goes first; the others still come from the log."""
    log = tmp_path / "r.log"
    _write_log(log, _started_with(1.0))
    args = _args(log, max_machines=5)
    keep_run_options(args)
    assert (args.server_type, args.max_machines) == ("2x-large", 5)


def test_a_log_that_recorded_no_options_leaves_the_defaults(tmp_path: Path) -> None:
    """A start written before the options were recorded: nothing is kept (the defaults)."""
    log = tmp_path / "old.log"
    _write_log(log, _started(1.0))
    args = _args(log)
    keep_run_options(args)
    assert (args.server_type, args.max_machines, args.idle_timeout) == (None, None, None)


@pytest.mark.slow
def test_the_resumed_run_records_and_uses_the_runs_options(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """End to end: the resume's own start records the options it kept from the run."""
    started = ev.SystemStarted(
        run_id="r1",
        version="0",
        mode="simulated",
        at=time.time() - 30,
        out_dir=str(tmp_path / "o1"),
        server_type="large",
        max_machines=2,
        idle_timeout=30.0,
    )
    _write_log(tmp_path / "r.log", started)
    assert main(["run", "--resume", "r.log", "--json"]) == 0  # (no job: nothing to resume)
    capsys.readouterr()
    starts = [r.event for r in eventlog.read(tmp_path / "r.log", ev.Event)]
    resumed = [s for s in starts if isinstance(s, ev.SystemStarted)][-1]
    assert (resumed.server_type, resumed.max_machines, resumed.idle_timeout) == (
        "large",
        2,
        30.0,
    )
