"""A log is resumed where its run ran: ``run --resume`` and ``serve --log`` of a log whose
run was on the user's ComfyUI, RunComfy or the embedded simulated cloud, started on another
of the three, are refused in one line (exit 2) saying what to pass, the log left as it was.

Before, a ``--comfyui-url`` run resumed without ``--comfyui-url`` ran its jobs on the
embedded simulated cloud and reported its placeholder images as the user's results."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev

pytestmark = pytest.mark.usefixtures("no_credentials")

URL = "http://127.0.0.1:9"  # nothing answers there: the refusal comes before any request


def _log_of_a_run_on(path: Path, mode: str) -> int:
    """A run on ``mode`` that stopped in order; returns its record count."""
    now = time.time()
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode=mode, at=now - 30),  # type: ignore[arg-type]
                ev.SystemStopped(reason="interrupted", at=now - 20),
            ]
        )
    return len(list(eventlog.read(path, ev.Event)))


def _runcomfy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u1")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "tok-123")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "http://127.0.0.1:9")


# (the log's mode, where this start runs, what the one line must say)
CASES = [
    ("comfyui", "simulated", "that run used your ComfyUI (--comfyui-url): pass --comfyui-url URL"),
    ("comfyui", "runcomfy", "that run used your ComfyUI (--comfyui-url): pass --comfyui-url URL"),
    ("simulated", "comfyui", "resume it as it ran, without a ComfyUI URL (no --comfyui-url"),
    ("runcomfy", "comfyui", "that run was on RunComfy: resume it without a ComfyUI URL"),
]


@pytest.mark.parametrize(("logged", "here", "said"), CASES)
def test_run_resume_elsewhere_than_the_run_ran_is_refused(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    logged: str,
    here: str,
    said: str,
) -> None:
    """`run --resume LOG` on another cloud than LOG's run: one line, exit 2, log unchanged."""
    log = tmp_path / "r.log"
    records = _log_of_a_run_on(log, logged)
    args = ["run", "--resume", "r.log"]
    if here == "comfyui":
        args += ["--comfyui-url", URL]
    elif here == "runcomfy":
        _runcomfy(monkeypatch)
        args += ["--workflow-version", "wv-1"]
    err = one_line_usage_error(main(args), capsys.readouterr().err)
    assert said in err, err
    assert "tok-123" not in err
    assert len(list(eventlog.read(log, ev.Event))) == records


def test_comfyui_url_in_the_environment_resumes_a_comfyui_run(tmp_path: Path) -> None:
    """The ComfyUI URL may come from CONJURE_COMFYUI_URL (or the config file): that is the
    run's cloud, not refused as another."""
    from conjure_actors.commands.replay_impl import fold_log
    from conjure_actors.commands.run import refuse_runcomfy_log_elsewhere
    from conjure_actors.config import load_config

    _log_of_a_run_on(tmp_path / "r.log", "comfyui")
    state, _, _ = fold_log(str(tmp_path / "r.log"))
    config = load_config(env={"CONJURE_COMFYUI_URL": URL}, cwd=tmp_path)
    refuse_runcomfy_log_elsewhere(state, config.mode, "--resume r.log")  # does not raise


def test_serve_log_of_a_comfyui_run_without_its_url_is_refused(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """`serve --log LOG` of a --comfyui-url serve, started without it, would run its queued
    API jobs on the embedded simulated cloud: refused as run --resume is."""
    log = tmp_path / "s.log"
    records = _log_of_a_run_on(log, "comfyui")
    code = main(["serve", "--log", str(log), "--port", "0"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "pass --comfyui-url URL" in err, err
    assert len(list(eventlog.read(log, ev.Event))) == records
