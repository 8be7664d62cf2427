"""``eventlog.writer_pid``: which process holds a log's write lock, where the OS says it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import eventlog
from eventlog import writer

pytestmark = pytest.mark.skipif(
    not os.path.exists(writer.PROC_LOCKS), reason="the OS does not list its locks"
)


def test_names_the_process_whose_writer_holds_the_log(tmp_path: Path) -> None:
    """While a writer holds the log: this process's pid; once it closes: None."""
    path = tmp_path / "w.log"
    with eventlog.open_writer(path, int, sync="none") as w:
        w.append(1)
        assert eventlog.writer_pid(path) == os.getpid()
    assert eventlog.writer_pid(path) is None


def test_no_pid_for_a_log_nobody_writes_or_that_is_not_there(tmp_path: Path) -> None:
    """A free lock, or no file: None (never a pid of a lock on another file)."""
    other = tmp_path / "other.log"
    with eventlog.open_writer(other, int, sync="none"):
        eventlog.open_writer(tmp_path / "w.log", int, sync="none").close()
        assert eventlog.writer_pid(tmp_path / "w.log") is None
        assert eventlog.writer_pid(tmp_path / "missing.log") is None


def test_a_holder_the_os_does_not_name_is_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A lock listed with pid 0 (a process of another pid namespace): None, not pid 0."""
    path = tmp_path / "w.log"
    with eventlog.open_writer(path, int, sync="none"):
        st = path.stat()
        file_id = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
        listed = tmp_path / "locks"
        listed.write_text(f"1: FLOCK  ADVISORY  WRITE 0 {file_id} 0 EOF\n")
        monkeypatch.setattr(writer, "PROC_LOCKS", str(listed))
        assert eventlog.writer_pid(path) is None
