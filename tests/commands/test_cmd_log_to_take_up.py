"""``run --resume LOG`` and ``serve --log LOG`` on an existing log they cannot write, cannot
read, or that is damaged (QA finding H3): the one line says what is wrong and how to fix it,
and names the machines the log says may still be billing, with how to stop them; never
"pick another path" (the log is the only record of its run), which stays for a new log."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from bad_input_support import one_line_usage_error

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev

pytestmark = pytest.mark.usefixtures("no_credentials")

SERVE = ["serve", "--port", "0", "--log"]


def left_billing(path: Path, mode: str = "runcomfy", *, launch_in_flight: bool = False) -> Path:
    """A log whose run (on ``mode``) was killed with machine ``5a9414b8`` Ready and
    ``77c0ffee`` stopped (and, ``launch_in_flight``, a launch without outcome)."""
    now = time.time()
    events: list[Any] = [ev.SystemStarted(run_id="r1", version="0", mode=mode, at=now - 60)]
    for key, sid in (("k1", "5a9414b8"), ("k2", "77c0ffee")):
        events += [
            ev.MachineLaunchRequested(
                request_key=key,
                server_type="medium",
                workflow_version="wv",
                estimated_duration=600,
                at=now - 50,
            ),
            ev.MachineLaunched(request_key=key, server_id=sid, at=now - 49),
            ev.MachineReady(
                server_id=sid,
                service_ready_at=now - 40,
                estimated_stopping_at=now + 3600,
                rate_micros_per_hour=990_000,
                price_table_version="t",
                at=now - 40,
            ),
        ]
    events.append(
        ev.MachineStopped(
            server_id="77c0ffee", stopped_at=now - 30, billed_seconds=10, cost_micros=3, at=now - 30
        )
    )
    if launch_in_flight:
        events.append(
            ev.MachineLaunchRequested(
                request_key="k3",
                server_type="medium",
                workflow_version="wv",
                estimated_duration=600,
                at=now - 20,
            )
        )
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(events)
    return path


def refuse_to_open(monkeypatch: pytest.MonkeyPatch, path: Path, flag: int, code: int) -> None:
    """``os.open`` of ``path`` with ``flag`` fails with ``code`` (as for another user's,
    an immutable or an unreadable file: the tests run as root, whom modes do not stop)."""
    real = os.open

    def refusing(file: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.abspath(file) == str(path.absolute()) and (flags & flag) == flag:
            raise OSError(code, os.strerror(code), os.fspath(file))
        return real(file, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refusing)


def damage(path: Path) -> None:
    """Flip a byte of the log's last record (a checksum mismatch: ``corrupt``)."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("command", "again"),
    [
        (["run", "--resume"], "`python -m conjure_actors run --resume kc.log` again;"),
        (
            SERVE,
            "`python -m conjure_actors serve --log kc.log` again (with the same other options);",
        ),
    ],
    ids=["run-resume", "serve-log"],
)
def test_an_immutable_log_says_how_to_fix_it_and_its_machines(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    again: str,
) -> None:
    """EPERM (chattr +i, another user's) said "cannot write it (...): pick another path",
    leaving the run's Ready machine unmentioned."""
    log = left_billing(Path("kc.log"))
    refuse_to_open(monkeypatch, log, os.O_RDWR, errno.EPERM)
    err = one_line_usage_error(main([*command, "kc.log"]), capsys.readouterr().err)
    assert "pick another path" not in err
    assert "cannot write it (Operation not permitted: it is immutable or append-only" in err
    assert "chattr -i -a kc.log, as root) or run as its owner" in err
    assert again in err
    assert "may be billing: 5a9414b8 (ready): stop each with" in err
    assert "`python -m conjure_actors machine down --server-id ID`" in err
    assert "77c0ffee" not in err  # (stopped)


def test_a_read_only_log_says_to_give_write_access(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """EACCES (read-only, another user's): fix its permissions, or run as its owner."""
    log = left_billing(Path("kc.log"))
    refuse_to_open(monkeypatch, log, os.O_RDWR, errno.EACCES)
    err = one_line_usage_error(main(["run", "--resume", "kc.log"]), capsys.readouterr().err)
    assert "cannot write it (Permission denied: it is read-only, or another user's)" in err
    assert "give this user write access to it (chmod u+w kc.log, or chown)" in err
    assert "pick another path" not in err


def test_a_launch_without_outcome_is_named_too(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A launch the log has no outcome of may have started a machine it does not name:
    said, with where the account's machines are listed."""
    log = left_billing(Path("kc.log"), launch_in_flight=True)
    refuse_to_open(monkeypatch, log, os.O_RDWR, errno.EPERM)
    err = one_line_usage_error(main(["run", "--resume", "kc.log"]), capsys.readouterr().err)
    assert "; 1 launch of its run has no outcome logged" in err


def test_a_simulated_runs_log_names_no_machine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The embedded simulated cloud ended with its process: nothing of it bills."""
    log = left_billing(Path("kc.log"), mode="simulated")
    refuse_to_open(monkeypatch, log, os.O_RDWR, errno.EPERM)
    err = one_line_usage_error(main(["run", "--resume", "kc.log"]), capsys.readouterr().err)
    assert "billing" not in err
    assert err.rstrip().endswith("`python -m conjure_actors run --resume kc.log` again")


def test_a_corrupt_run_log_says_to_take_the_salvaged_copy_up(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """run --resume said "salvage f11.log f11.log.salvaged: pick another path", and not
    what to do with the copy."""
    log = left_billing(Path("f11.log"))
    damage(log)
    err = one_line_usage_error(main(["run", "--resume", "f11.log"]), capsys.readouterr().err)
    assert "pick another path" not in err
    assert "python -m eventlog salvage f11.log f11.log.salvaged, then take the copy up with" in err
    assert "`python -m conjure_actors run --resume f11.log.salvaged`;" in err
    assert "f11.log stays as it is; meanwhile the machines of its run may be billing:" in err
    # (The damaged record was 77c0ffee's stop: the records before it leave it running.)
    assert "5a9414b8 (ready), 77c0ffee (ready) (as its records before the damage tell)" in err


def test_a_corrupt_serve_log_says_to_put_the_salvaged_copy_in_its_place(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """serve keeps its assets' bytes in LOG.blobs/: served from LOG.salvaged every output
    and upload was 404 "no asset" (QA H6), so the copy must take the log's place."""
    log = left_billing(Path("f11.log"))
    damage(log)
    err = one_line_usage_error(main([*SERVE, "f11.log"]), capsys.readouterr().err)
    assert "pick another path" not in err
    assert "serve --log f11.log.salvaged" not in err
    assert "python -m eventlog salvage f11.log f11.log.salvaged, then put the copy in" in err
    assert "`mv f11.log f11.log.corrupt && mv f11.log.salvaged f11.log`" in err
    assert "stay in f11.log.blobs" in err
    assert "`python -m conjure_actors serve --log f11.log` again (with the same other" in err
    assert "5a9414b8 (ready), 77c0ffee (ready) (as its records before the damage tell)" in err


@pytest.mark.parametrize(
    ("command", "again"),
    [
        (["run", "--resume"], "`python -m conjure_actors run --resume s.log` again;"),
        (
            SERVE,
            "`python -m conjure_actors serve --log s.log` again (with the same other options);",
        ),
    ],
    ids=["run-resume", "serve-log"],
)
def test_an_unreadable_log_says_to_get_read_access(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    command: list[str],
    again: str,
) -> None:
    """Another user's log (mode 0600): "give this user read access ...: pick another path"
    (serve); run --resume did not say to resume it then, nor what may be billing."""
    log = left_billing(Path("s.log"))
    refuse_to_open(monkeypatch, log, os.O_RDONLY, errno.EACCES)
    err = one_line_usage_error(main([*command, "s.log"]), capsys.readouterr().err)
    assert "give this user read access to it, or run as its owner, then" in err
    assert again in err
    assert "`python -m conjure_actors status s.log`, run as its owner, lists them" in err
    assert "pick another path" not in err


def test_a_new_serve_log_that_cannot_be_created_still_says_pick_another_path(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new log holds nothing yet: another path is the right advice."""
    refuse_to_open(monkeypatch, Path("new.log"), os.O_CREAT, errno.EACCES)
    err = one_line_usage_error(main([*SERVE, "new.log"]), capsys.readouterr().err)
    assert err.rstrip().endswith("cannot write it (Permission denied): pick another path")
