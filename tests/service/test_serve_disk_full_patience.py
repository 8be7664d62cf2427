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
