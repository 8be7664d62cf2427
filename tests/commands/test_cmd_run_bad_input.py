"""Bad input to ``run`` (flags, settings, files) is one line saying what is wrong and what
to do, exit 2, before anything starts (cases from the CLI review)."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main
from conjure_actors.commands.run import check_out_dir
from conjure_actors.errors import UsageError

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize("budget", ["1e308", "1e300"])
def test_a_huge_budget_is_one_line(capsys: pytest.CaptureFixture[str], budget: str) -> None:
    """--budget 1e308 overflowed the micros (a traceback); 1e300 crashed the cost actor
    after the banner. PUT /api/conjure/budget refuses above $1,000,000: so does run."""
    code = main(["run", "--budget", budget, "--log", "x.log"])
    one_line_usage_error(code, capsys.readouterr().err)
    assert not Path("x.log").exists()


@pytest.mark.parametrize("lease", ["inf", "1e308"])
def test_an_endless_lease_is_a_config_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, lease: str
) -> None:
    """CONJURE_POOL_LEASE_SECONDS=inf crash-looped the actors until the root supervisor
    gave up (exit 1), no line naming the setting."""
    monkeypatch.setenv("CONJURE_POOL_LEASE_SECONDS", lease)
    code = main(["run", "--log", "x.log"])
    err = capsys.readouterr().err
    one_line_usage_error(code, err)
    assert "pool.lease_seconds" in err


def test_a_token_with_a_newline_is_refused_unsaid(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pasted token ending in a newline failed every request in h11, retried ~30 s as
    'connection lost' (exit 1): it is the token, not the network."""
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u1")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "tok-123\n")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "http://127.0.0.1:9")
    code = main(["run", "--workflow-version", "v1", "--log", "x.log"])
    err = capsys.readouterr().err
    one_line_usage_error(code, err)
    assert "RUNCOMFY_API_TOKEN" in err
    assert "tok-123" not in err


def test_a_base_url_that_is_not_a_url_is_refused_at_once(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """RUNCOMFY_API_BASE_URL=notaurl was retried ~30 s as 'connection lost
    (UnsupportedProtocol)', exit 1."""
    monkeypatch.setenv("RUNCOMFY_USER_ID", "u1")
    monkeypatch.setenv("RUNCOMFY_API_TOKEN", "tok-123")
    monkeypatch.setenv("RUNCOMFY_API_BASE_URL", "notaurl")
    code = main(["run", "--workflow-version", "v1", "--log", "x.log"])
    err = capsys.readouterr().err
    one_line_usage_error(code, err)
    assert "RUNCOMFY_API_BASE_URL" in err


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys (Linux)")
@pytest.mark.parametrize("log", ["/sys/x.log", "/proc/x.log"])
def test_a_log_in_an_unwritable_place_is_checked_before_start(
    capsys: pytest.CaptureFixture[str], log: str
) -> None:
    """--log /sys/x.log failed after the banner ('PermissionError ... (run with --debug)',
    exit 1); /proc/x.log said 'its directory does not exist' (it does)."""
    code = main(["run", "--log", log])
    captured = capsys.readouterr()
    err = one_line_usage_error(code, captured.err)
    assert "cannot write it" in err
    assert "does not exist" not in err
    assert "running on" not in captured.out + captured.err


def test_an_existing_file_that_is_not_a_log_is_not_offered_to_resume(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """run --log sketch.png said 'pass --resume sketch.png to finish that run'."""
    (tmp_path / "sketch.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    code = main(["run", "--log", "sketch.png"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "not an event log" in err
    assert "--resume" not in err


@pytest.mark.parametrize("flag", ["--log", "--resume"])
def test_a_directory_for_the_log_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flag: str
) -> None:
    """run --resume demo (a directory) said 'no such log file'; --log demo offered to resume
    it. Both say it is a directory and name a log file in it."""
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "run-1.log").write_bytes(b"")
    code = main(["run", flag, "demo"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "a directory, not a log file" in err
    assert "demo/run-1.log" in err


@pytest.mark.parametrize("prompt", ["", "   "])
def test_an_empty_prompt_is_refused_as_serve_refuses_it(
    capsys: pytest.CaptureFixture[str], prompt: str
) -> None:
    """run --prompt '' (an unset shell variable) ran the paid job with an empty prompt;
    POST /api/conjure/jobs refuses it (400)."""
    code = main(["run", "--prompt", prompt, "--log", "x.log", "--json"])
    assert "--prompt is empty" in one_line_usage_error(code, capsys.readouterr().err)


@pytest.mark.slow  # ~5 s: a run, then its resume, on the simulated cloud
def test_resuming_a_finished_run_says_there_is_nothing_to_resume(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run --resume of a finished log appended a session and reprinted the old summary,
    no line saying there was nothing to resume. (A finished log of a RunComfy run, resumed
    without credentials, is refused instead: test_cmd_run_resume_mode.py.)"""
    assert main(["run", "--log", "done.log", "--json"]) == 0
    capsys.readouterr()
    main(["run", "--resume", "done.log", "--json"])
    err = capsys.readouterr().err
    assert "nothing to resume: every job in done.log had ended" in err


def test_an_out_that_cannot_be_looked_at_is_one_line(tmp_path: Path) -> None:
    """Its stat refused (a folder on the way this user may not enter: not as root, so faked
    here): a usage error, not a PermissionError traceback."""

    class Refused(type(tmp_path)):  # type: ignore[misc]
        def stat(self, *, follow_symlinks: bool = True) -> os.stat_result:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))

    with pytest.raises(UsageError) as refused:
        check_out_dir(Refused(tmp_path / "out"))
    assert str(refused.value) == (
        f"--out {tmp_path / 'out'}: cannot create it (Permission denied): pick another directory"
    )
