"""A full disk under the blob store is 507 ``insufficient_storage`` with what to do, one line
on serve's log, and nothing half-stored (QA's D3: the 5th 40 KB upload on a 200 KB tmpfs
got 500 ``upstream_error``)."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path
from typing import Any

import pytest
from extras_support import open_extras_service

from conjure_actors.service import blobs


def _form(data: bytes) -> dict[str, Any]:
    return {
        "files": {"file": ("x.png", data, "image/png")},
        "data": {"content_type": "image/png", "file_path": "x.png"},
    }


async def test_an_upload_on_a_full_disk_is_507_and_stores_nothing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    autojump_clock: Any,
) -> None:
    """The blob's fsync finds the disk full: 507 with Retry-After, one ERROR line naming
    the fix, no blob, no asset; the same upload succeeds once there is room."""
    real_fsync = os.fsync

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    async with open_extras_service(tmp_path) as run:
        monkeypatch.setattr(blobs.os, "fsync", full)
        answer = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 10_000))
        monkeypatch.setattr(blobs.os, "fsync", real_fsync)
        assert answer.status_code == 507, answer.text
        assert answer.json()["error"]["code"] == "insufficient_storage"
        assert "disk is full" in answer.json()["error"]["message"]
        assert answer.headers["retry-after"].isdigit()
        assert run.service.state.service.assets == {}
        assert list(run.service.blobs.root.iterdir()) == []
        metrics = (await run.client.get("/metrics")).text
        again = await run.client.post("/api/v2/assets", **_form(b"\x89PNG" * 10_000))
        assert again.status_code == 201, again.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    assert "cannot write the blob store" in errors[0].getMessage()
    assert "free space on its disk" in errors[0].getMessage()
    assert errors[0].exc_info is None
    assert 'route="upload",status="507"' in metrics
