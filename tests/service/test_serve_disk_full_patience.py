"""The journal ``serve`` opens (``open_serve``, ``--disk-full-patience``'s default) holds
through a full disk: over a real socket, in real time (one 0.5 s retry)."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from service_helpers import serving, workflow


@pytest.mark.slow  # ~0.3 s or more: the inner loop runs without it, CI with it
async def test_serves_journal_holds_a_full_disk_and_goes_on_once_it_frees(
    sim_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """serve as run (open_serve, its default patience): a job submitted while the log's
    disk is full waits, held; once the disk frees it is answered 201 and is in the log."""
    real_pwrite = os.pwrite
    full = [False]
    fd = [-1]

    def pwrite(to: int, data: bytes, offset: int) -> int:
        if to == fd[0] and full[0]:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(to, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    answers: list[httpx.Response] = []
    with trio.fail_after(60):
        async with (
            serving(sim_config, tmp_path) as served,
            httpx.AsyncClient(base_url=served.url) as http,
            trio.open_nursery() as nursery,
        ):
            journal = served.service.journal
            fd[0] = journal._store._fd
            full[0] = True

            async def submit() -> None:
                job = {"workflow": workflow("invert_save.json")}
                answers.append(await http.post("/api/v2/jobs", json=job))

            nursery.start_soon(submit)
            while journal.held is None:  # noqa: ASYNC110 - the journal has no event for it
                await trio.sleep(0.01)
            assert answers == []
            full[0] = False
        jobs = served.service.state.jobs
    assert [a.status_code for a in answers] == [201]
    assert answers[0].json()["id"] in jobs


async def test_a_disk_full_during_start_up_stops_serve_at_once(
    sim_config: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hold begins once serve is up: a disk full from the start fails start-up at once
    with the full disk (as before), instead of holding it deaf to signals for 600 s."""
    real_pwrite = os.pwrite
    log = str(tmp_path / "serve.log")

    def pwrite(fd: int, data: bytes, offset: int) -> int:
        if offset > 0 and os.readlink(f"/proc/self/fd/{fd}") == log:  # records, not the header
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_pwrite(fd, data, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    start = trio.current_time()
    with trio.fail_after(60), pytest.raises(BaseException) as caught:  # noqa: PT011
        async with serving(sim_config, tmp_path):
            pass
    assert trio.current_time() - start < 30
    assert _disk_full_in(caught.value), caught.value


def _disk_full_in(exc: BaseException | None) -> bool:
    """Whether a DiskFullError is ``exc``, a member of its groups or a cause."""
    import eventlog

    seen: list[BaseException | None] = [exc]
    while seen:
        current = seen.pop()
        if current is None:
            continue
        if isinstance(current, eventlog.DiskFullError):
            return True
        if isinstance(current, BaseExceptionGroup):
            seen.extend(current.exceptions)
        seen.extend([current.__cause__, current.__context__])
    return False
