"""``/api/v2/jobs`` answers 405 with every method it has in ``Allow`` (two routes on one path
each answered 405 with only their own: QA F3)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio
from extras_support import open_extras_service


async def test_a_405_on_the_jobs_lists_every_method_it_has(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(600):
        async with open_extras_service(tmp_path) as run:
            r = await run.client.delete("/api/v2/jobs")
    assert r.status_code == 405
    assert {m.strip() for m in r.headers["allow"].split(",")} == {"GET", "HEAD", "POST"}
