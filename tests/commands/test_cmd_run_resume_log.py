"""``run --resume`` and ``replay --check`` on logs that hold no run or are damaged (subprocess).

Each case is refused with one line and exit 2 before anything starts, and the file is left
exactly as it was; ``replay --check`` fails on a damaged last record instead of passing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eventlog._format import header_bytes

# Each test runs the CLI in a subprocess: `just test-slow` and CI run them.
pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).resolve().parent.parent / "data" / "golden_v1.log"


def conjure(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m conjure_actors ARGS`` in ``cwd`` without credentials."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}
    return subprocess.run(
        [sys.executable, "-m", "conjure_actors", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def damaged_golden(tmp_path: Path) -> Path:
    """A copy of the golden log with one bit flipped in its last record's payload."""
    log = tmp_path / "damaged.log"
    shutil.copyfile(GOLDEN, log)
    raw = bytearray(log.read_bytes())
    raw[-3] ^= 0x10
    log.write_bytes(raw)
    return log


def assert_one_line_refusal(done: subprocess.CompletedProcess[str]) -> str:
    """Exit 2, one line on stderr, no traceback; return the line."""
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
    assert "Traceback" not in done.stderr
    return done.stderr.strip()


@pytest.mark.parametrize(
    "content",
    [b"", header_bytes()[:7], header_bytes(), header_bytes() + b"\x01\x02\x03"],
    ids=["0-bytes", "header-prefix", "header-only", "header-and-torn-record"],
)
def test_resume_of_a_log_without_records_is_refused(tmp_path: Path, content: bytes) -> None:
    """A log with no record (empty, header only, torn first record) holds no run to resume."""
    log = tmp_path / "run.log"
    log.write_bytes(content)
    line = assert_one_line_refusal(conjure(tmp_path, "run", "--resume", str(log)))
    assert line.endswith(f"{log} holds no run to resume; run without --resume")
    assert log.read_bytes() == content
    assert not (tmp_path / "out").exists()


def test_resume_of_a_file_that_is_not_a_log_is_refused(tmp_path: Path) -> None:
    """A text file passed as LOG is named as not an event log, and not written to."""
    log = tmp_path / "notes.txt"
    log.write_text("these are my notes, not an event log\n")
    line = assert_one_line_refusal(conjure(tmp_path, "run", "--resume", str(log)))
    assert "is not an event log" in line
    assert log.read_text() == "these are my notes, not an event log\n"


def test_resume_of_a_damaged_log_names_the_offset_and_the_salvage_command(
    tmp_path: Path,
) -> None:
    """A damaged last record: one line with its byte offset and the salvage command; the
    record is not deleted."""
    log = damaged_golden(tmp_path)
    before = log.read_bytes()
    line = assert_one_line_refusal(conjure(tmp_path, "run", "--resume", str(log)))
    assert "corrupt at byte offset" in line
    assert f"python -m eventlog salvage {log} {log}.salvaged" in line
    assert log.read_bytes() == before


def test_replay_check_fails_on_a_damaged_last_record(tmp_path: Path) -> None:
    """--check exits non-zero naming the offset when the last record's checksum fails."""
    log = damaged_golden(tmp_path)
    done = conjure(tmp_path, "replay", str(log), "--check")
    assert done.returncode == 1, done.stdout
    assert "corrupt at byte offset" in done.stderr
    assert "Traceback" not in done.stderr
