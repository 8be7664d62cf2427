"""tests/conftest.py's ``inline_worker_threads_under_autojump``: worker threads stay inline
for the whole test, even after the test undoes its own ``monkeypatch`` (a blob store that
takes writes again). They were undone with it: the rest of the test ran real threads under
the autojump clock, mock time leapt ahead while one worked, and a test read a job before
its output, stored by then, was recorded (1 run in 16 of
test_a_store_fixed_while_an_output_is_tried_still_makes_the_job_succeed)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import trio


async def test_worker_threads_stay_inline_after_the_test_undoes_its_monkeypatch(
    monkeypatch: pytest.MonkeyPatch,
    autojump_clock: Any,
    inline_worker_threads_under_autojump: None,
) -> None:
    """A call "in a thread" runs on the test's own thread before and after the undo."""
    here = threading.get_ident()
    assert await trio.to_thread.run_sync(threading.get_ident) == here
    monkeypatch.undo()  # as a test does once the store it made refuse takes writes again
    assert await trio.to_thread.run_sync(threading.get_ident) == here
