"""Issue 14, as the user sees it: bad input is refused before anything is launched, one line
per problem, exit 2; ``--version``; an example in every ``--help``; half a credential set."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from conjure_actors.cli import COMMANDS
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.serve import ServedComfyUI, serve_comfyui

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]


def _cli(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    return subprocess.run(
        [sys.executable, "-m", "conjure_actors", *args],
        cwd=cwd,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _refused(proc: subprocess.CompletedProcess[str], cwd: Path) -> list[str]:
    """Exit 2, no traceback, nothing started: no banner, no log, no machine."""
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert "running on" not in proc.stdout + proc.stderr
    assert not list(cwd.glob("runs/*.log"))
    return proc.stderr.splitlines()


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--seed", "-1"],
            "error: --seed -1: a seed is an integer from 0 to 18446744073709551615",
        ),
        (
            ["--seed", "99999999999999999999999"],
            "error: --seed 99999999999999999999999: a seed is an integer from 0 to"
            " 18446744073709551615",
        ),
        (
            ["--set", "20.steps=abc"],
            "error: conjure_flux_mesh.json: workflow has 1 problem: node 20 (KSampler) input"
            " 'steps': expects an integer, got 'abc'",
        ),
        (
            ["--priority", "99999999999999999999999"],
            "error: --priority 99999999999999999999999: use an integer from -2**63 to 2**63-1",
        ),
        (
            ["--jobs", "99999999999999999999"],
            "error: --jobs 99999999999999999999: use a number from 1 to 10000",
        ),
        (
            ["--budget", "nan"],
            "error: --budget: must be a number from 0 to 1000000 (USD), got nan",
        ),
        (
            ["--idle-timeout", "nan"],
            "error: --idle-timeout: must be a finite number, got nan",
        ),
        (
            ["--comfyui-url", "notaurl"],
            "error: --comfyui-url: not an http:// or https:// URL with a host"
            " (e.g. http://127.0.0.1:8188)",
        ),
    ],
)
def test_bad_numbers_are_one_line_and_launch_nothing(
    tmp_path: Path, args: list[str], line: str
) -> None:
    """--seed -1, a seed past 64 bits, a word for an INT, a huge priority or job count, a
    NaN budget or timeout, a URL that is not one: one line, exit 2, nothing started."""
    assert _refused(_cli(tmp_path, "run", *args), tmp_path) == [line]


def test_several_bad_flags_are_said_as_the_inputs_problems(tmp_path: Path) -> None:
    """Only flags wrong: a header that blames the inputs (not the workflow), one line each."""
    (tmp_path / "x.png").write_text("not an image")
    proc = _cli(tmp_path, "run", "--image", "x.png", "--seed", "-1")
    assert _refused(proc, tmp_path) == [
        "error: the inputs have 2 problems:",
        "  - --seed -1: a seed is an integer from 0 to 18446744073709551615",
        "  - --image x.png: not an image ComfyUI's LoadImage reads"
        " (PNG, JPEG, WebP, GIF, BMP, TIFF...), or one cut short or damaged",
    ]


def test_every_problem_is_its_own_line(tmp_path: Path) -> None:
    """Several bad inputs at once: a header, then one line per problem, nothing launched."""
    (tmp_path / "x.png").write_text("not an image")
    proc = _cli(tmp_path, "run", "--image", "x.png", "--set", "20.cfg=1e9", "--seed", "-1")
    assert _refused(proc, tmp_path) == [
        "error: conjure_flux_mesh.json: workflow has 3 problems:",
        "  - --seed -1: a seed is an integer from 0 to 18446744073709551615",
        "  - --image x.png: not an image ComfyUI's LoadImage reads"
        " (PNG, JPEG, WebP, GIF, BMP, TIFF...), or one cut short or damaged",
        "  - node 20 (KSampler) input 'cfg': 1000000000.0 is above the maximum 100.0",
    ]


def test_unknown_class_is_refused_before_the_simulated_cloud_starts(tmp_path: Path) -> None:
    """A class the target's catalogue lacks is found before a machine is launched."""
    graph = {
        "1": {"class_type": "NoSuchNode", "inputs": {}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    (tmp_path / "w.json").write_text(json.dumps(graph))
    lines = _refused(_cli(tmp_path, "run", "w.json"), tmp_path)
    assert lines == [
        "error: w.json: workflow has 1 problem: node 1: unknown class 'NoSuchNode'"
        " (not in the node catalog)"
    ]


def test_validate_says_what_run_says(tmp_path: Path) -> None:
    """``validate --set 20.steps=abc`` (issue 14: it said ok) refuses with run's line."""
    workflow = str(ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json")
    validate = _cli(tmp_path, "validate", workflow, "--set", "20.steps=abc")
    run = _cli(tmp_path, "run", workflow, "--set", "20.steps=abc")
    assert validate.returncode == run.returncode == 2
    assert validate.stderr == run.stderr


def test_existing_log_without_resume_is_refused(tmp_path: Path) -> None:
    """--log on an existing run's log: one line saying --resume or another path; the file
    untouched."""
    import eventlog
    from conjure_actors.domain.events import Event, SystemStarted

    with eventlog.open_writer(tmp_path / "old.log", Event, sync="none") as writer:
        writer.append(SystemStarted(run_id="r", version="0", mode="simulated", at=1.0))
    before = (tmp_path / "old.log").read_bytes()
    assert _refused(_cli(tmp_path, "run", "--log", "old.log"), tmp_path) == [
        "error: --log old.log: the file exists and a new run never appends to an old one:"
        " pass --resume old.log to finish that run, or another --log path"
    ]
    assert (tmp_path / "old.log").read_bytes() == before


def test_existing_file_that_is_no_log_is_refused_as_such(tmp_path: Path) -> None:
    """--log on a file that is no event log: it says so (no --resume offered); untouched."""
    (tmp_path / "old.log").write_bytes(b"old run")
    (line,) = _refused(_cli(tmp_path, "run", "--log", "old.log"), tmp_path)
    assert line.startswith("error: --log old.log: the file exists and is not a run's log (")
    assert "--resume" not in line
    assert (tmp_path / "old.log").read_bytes() == b"old run"


def test_unwritable_out_is_one_line(tmp_path: Path) -> None:
    """--out /proc/forbidden (issue 14: 78 lines of traceback): one line."""
    lines = _refused(_cli(tmp_path, "run", "--out", "/proc/forbidden"), tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith("error: --out /proc/forbidden: cannot create it (")


def test_resume_on_a_non_log_is_one_line(tmp_path: Path) -> None:
    """run --resume on a file that is not a log: one line, exit 2."""
    (tmp_path / "notes.txt").write_text("hello")
    lines = _refused(_cli(tmp_path, "run", "--resume", "notes.txt"), tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith("error: --resume notes.txt: ")


def test_resume_on_a_locked_log_is_one_line(tmp_path: Path) -> None:
    """A log another run holds (issue 14: 71 lines): one line, nothing started."""
    log = tmp_path / "held.log"
    done = _cli(tmp_path, "run", "--log", str(log), "--json")
    assert done.returncode == 0, done.stderr
    with log.open("rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # what a live writer holds
        proc = _cli(tmp_path, "run", "--resume", str(log))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        f"error: --resume {log}: another run is writing this log (it holds its lock):"
        " wait for it to end, or stop it with Ctrl-C first"
    ]


@pytest.mark.parametrize("present", ["RUNCOMFY_USER_ID", "RUNCOMFY_API_TOKEN"])
def test_half_a_credential_set_is_an_error(tmp_path: Path, present: str) -> None:
    """One credential without the other: one line naming both, exit 2, no simulated run."""
    lines = _refused(_cli(tmp_path, "run", **{present: "x-secret-x"}), tmp_path)
    assert len(lines) == 1
    assert lines[0].startswith(f"error: {present} is set but ")
    assert "x-secret-x" not in lines[0]


def test_prompt_body_file_runs_through_validate(tmp_path: Path) -> None:
    """A ``{"prompt": {...}}`` file (ComfyUI's API examples) validates like its graph."""
    graph = json.loads((ROOT / "conjure_actors" / "workflows" / "invert_save.json").read_text())
    (tmp_path / "body.json").write_text(json.dumps({"prompt": graph}))
    proc = _cli(tmp_path, "validate", "body.json")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("ok: body.json: ")


def test_version(tmp_path: Path) -> None:
    """--version prints the package version."""
    from conjure_actors import __version__

    proc = _cli(tmp_path, "--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"conjure_actors {__version__}")


@pytest.mark.parametrize("command", [*COMMANDS, "machine up"])
def test_every_help_has_an_example(tmp_path: Path, command: str) -> None:
    """Each command's --help (and machine up's own) ends with examples of that command."""
    proc = _cli(tmp_path, *command.split(), "--help")
    assert proc.returncode == 0, proc.stderr
    examples = proc.stdout.split("examples:\n", 1)[1]
    assert f"python -m conjure_actors {command}" in examples


def test_machine_up_help_is_its_own(tmp_path: Path) -> None:
    """machine up --help shows up's options, not machine's list of actions."""
    proc = _cli(tmp_path, "machine", "up", "--help")
    assert proc.stdout.startswith("usage: python -m conjure_actors machine up")
    assert "--workflow-version" in proc.stdout


def test_sim_fault_options_have_help(tmp_path: Path) -> None:
    """Every --fault-* option of sim says what it does."""
    text = " ".join(_cli(tmp_path, "sim", "--help").stdout.split())
    for name in ("429", "5xx", "launch-error", "stuck-starting", "vanish", "ws-drop"):
        assert f"--fault-{name} P per " in text, name


async def _cli_async(cwd: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    with trio.fail_after(120):
        return await trio.run_process(
            [sys.executable, "-m", "conjure_actors", *args],
            cwd=cwd,
            env=clean,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )


async def test_users_comfyui_catalogue_is_fetched_and_checked_first(tmp_path: Path) -> None:
    """--comfyui-url: a value that server's /object_info refuses is refused before anything
    is submitted (no prompt ran, no log), and validate --comfyui-url says the same."""
    async with trio.open_nursery() as nursery:
        served: ServedComfyUI = await nursery.start(serve_comfyui, ComfyUISim())
        args = ["--comfyui-url", served.url, "--set", '20.sampler_name="eulr"']
        run = await _cli_async(tmp_path, "run", "--log", "r.log", *args)
        workflow = str(ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json")
        validate = await _cli_async(tmp_path, "validate", workflow, *args)
        ran = list(served.sim.prompts_run)
        nursery.cancel_scope.cancel()
    err = run.stderr.decode()
    assert run.returncode == 2, err
    assert err.startswith(
        "error: conjure_flux_mesh.json: workflow has 1 problem: node 20 (KSampler) input"
        " 'sampler_name': 'eulr' is not one of: 'euler', "
    )
    assert len(err.splitlines()) == 1
    assert ran == []
    assert not (tmp_path / "r.log").exists()
    assert (validate.returncode, validate.stderr.decode()) == (2, err)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    """--debug: the same refusal, with its traceback (exit non-zero, nothing started)."""
    proc = _cli(tmp_path, "--debug", "run", "--seed", "-1")
    assert proc.returncode != 0
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.rstrip().endswith("a seed is an integer from 0 to 18446744073709551615")
    assert not list(tmp_path.glob("runs/*.log"))


def test_machine_up_refuses_a_nan_duration(tmp_path: Path) -> None:
    """machine up --duration nan (a traceback after the launch call): refused by argparse."""
    proc = _cli(tmp_path, "machine", "up", "--duration", "nan", RUNCOMFY_USER_ID="u")
    assert proc.returncode == 2
    assert (
        "argument --duration: must be a finite number of seconds >= 1, got nan"
        in proc.stderr.splitlines()[-1]
    )


def test_validate_image_that_is_a_directory(tmp_path: Path) -> None:
    """validate --image DIR is refused, not taken for an image name on the server."""
    workflow = str(ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json")
    proc = _cli(tmp_path, "validate", workflow, "--image", str(tmp_path))
    assert (proc.returncode, proc.stderr) == (
        2,
        f"error: --image {tmp_path}: is a directory, not an image file\n",
    )


def test_prompt_body_file_runs(tmp_path: Path) -> None:
    """run on a ``{"prompt": {...}, "client_id": ...}`` file (issue 14: "missing class_type")
    runs its graph to the end."""
    graph = json.loads(
        (ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json").read_text()
    )
    (tmp_path / "body.json").write_text(json.dumps({"prompt": graph, "client_id": "c1"}))
    assert _cli(tmp_path, "generate", "ex").returncode == 0
    proc = _cli(tmp_path, "run", "body.json", "--image", "ex/sketch.png", "--json")
    assert proc.returncode == 0, proc.stderr
    assert "jobs: 1 (1 succeeded" in proc.stderr
