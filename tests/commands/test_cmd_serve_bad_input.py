"""Bad input to ``serve`` is one line saying what is wrong and what to do, exit 2, before it
starts (no log written, nothing launched): cases from the CLI review."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from bad_input_support import one_line_usage_error

from conjure_actors.cli import main

pytestmark = pytest.mark.usefixtures("no_credentials")


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_a_port_out_of_range_is_one_line(capsys: pytest.CaptureFixture[str], port: str) -> None:
    """serve --port 99999 was an OverflowError traceback from the port probe."""
    code = main(["serve", "--port", port, "--log", "s.log"])
    assert "0 to 65535" in one_line_usage_error(code, capsys.readouterr().err)
    assert not Path("s.log").exists()


def test_a_log_that_is_not_a_log_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """serve --log picture.png: a NotALogError traceback inside an exception group."""
    picture = tmp_path / "picture.png"
    picture.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    code = main(["serve", "--port", "0", "--log", "picture.png"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "not an event log" in err
    assert picture.read_bytes() == b"\x89PNG\r\n\x1a\n" + b"\0" * 64


def test_a_directory_for_the_log_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """serve --log DIR names a file path to give instead."""
    (tmp_path / "logs").mkdir()
    code = main(["serve", "--port", "0", "--log", "logs"])
    assert "a directory, not a log file" in one_line_usage_error(code, capsys.readouterr().err)


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys (Linux)")
def test_an_unwritable_log_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --log /sys/s.log was a PermissionError traceback."""
    code = main(["serve", "--port", "0", "--log", "/sys/s.log"])
    assert "cannot write it" in one_line_usage_error(code, capsys.readouterr().err)


def test_an_out_that_is_a_file_is_one_line_before_anything_starts(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """serve --out FILE/out started and took jobs; each failed only after running on a paid
    machine ("cannot save ... locally"). Now one line, and nothing made (not the log's new
    folder either)."""
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["serve", "--port", "0", "--log", "logs/new/s.log", "--out", "notes.txt/out"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --out notes.txt/out: cannot create it (")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_out_that_names_a_file_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    code = main(["serve", "--port", "0", "--log", "s.log", "--out", "notes.txt"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == "error: --out notes.txt: a file, not a directory: pick another directory\n"


def test_an_out_that_is_a_link_to_nothing_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    code = main(["serve", "--port", "0", "--log", "s.log", "--out", "gone"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == "error: --out gone: a symbolic link to nothing: pick another directory\n"


@pytest.mark.parametrize("timeout", ["nan", "inf", "-1"])
def test_a_drain_timeout_that_is_not_seconds_is_refused(
    capsys: pytest.CaptureFixture[str], timeout: str
) -> None:
    """--drain-timeout nan was accepted; the first SIGTERM then crashed ('deadline must not
    be NaN') and left the jobs interrupted instead of drained."""
    code = main(["serve", "--port", "0", "--log", "s.log", "--drain-timeout", timeout])
    assert "--drain-timeout" in one_line_usage_error(code, capsys.readouterr().err)


@pytest.mark.parametrize("token", [" ", "", "sekrit tok", "sekrit\n"])
def test_a_blank_or_spaced_token_is_refused_unsaid(
    capsys: pytest.CaptureFixture[str], token: str
) -> None:
    """serve --token ' ' on 0.0.0.0 started and answered every client 401."""
    code = main(["serve", "--host", "0.0.0.0", "--port", "0", "--log", "s.log", "--token", token])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "--token" in err
    assert "sekrit" not in err


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--max-upload-mb", "inf"),
        ("--max-body-mb", "nan"),
        ("--max-body-mb", "inf"),
        ("--retention", "nan"),
        ("--retention", "inf"),
    ],
)
def test_a_size_or_retention_that_is_not_a_number_is_refused(
    capsys: pytest.CaptureFixture[str], flag: str, value: str
) -> None:
    """--max-upload-mb inf / --max-body-mb nan were an OverflowError / ValueError traceback
    (int() of the bytes); --retention nan started a service whose jobs never expire."""
    code = main(["serve", "--port", "0", "--log", "s.log", flag, value])
    assert f"{flag} {value}: give a finite number" in one_line_usage_error(
        code, capsys.readouterr().err
    )


def test_a_log_another_process_writes_is_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """serve --log on a log another serve (or run) holds: it failed after start-up with
    'LogLockedError ... (run with --debug)', exit 1."""
    import eventlog
    from conjure_actors.domain.events import Event, SystemStarted

    with eventlog.open_writer(tmp_path / "held.log", Event, sync="none") as writer:
        writer.append(SystemStarted(run_id="r", version="0", mode="simulated", at=1.0))
        code = main(["serve", "--port", "0", "--log", "held.log"])
    assert "another process is writing this log" in one_line_usage_error(
        code, capsys.readouterr().err
    )


@pytest.mark.parametrize("port", ["0", "8189"])
def test_a_host_that_does_not_resolve_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, port: str
) -> None:
    """serve --host nonexistent.invalid --port 0 was "error: gaierror: [Errno -2] ...", exit 1
    (and made the log); with a port, "pick another --port". Now one line naming --host."""

    def unknown(*args: object, **kwargs: object) -> None:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    code = main(["serve", "--host", "nonexistent.invalid", "--token", "x", "--port", port])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err == (
        "error: --host nonexistent.invalid: cannot resolve it (Name or service not known):"
        " give an address or a host name of this machine (default 127.0.0.1)\n"
    )
    assert list(Path().iterdir()) == []


def test_a_host_that_is_not_this_machines_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    """serve --host 192.0.2.1 (TEST-NET: no machine's address) was "pick another --port"."""
    code = main(["serve", "--host", "192.0.2.1", "--token", "x", "--port", "0"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert err.startswith("error: --host 192.0.2.1: cannot listen there (")


def test_a_comfyui_url_with_a_query_is_one_line_that_does_not_show_it(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """As run says it: refused before anything starts, the query (a token, maybe) unshown
    (serve took it, and joined its routes after the query)."""
    code = main(["serve", "--port", "0", "--comfyui-url", "http://127.0.0.1:1/?token=s3cret"])
    err = one_line_usage_error(code, capsys.readouterr().err)
    assert "a query or fragment" in err
    assert "s3cret" not in err
