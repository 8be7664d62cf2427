"""``serve``'s ``--journal-sync``: parsed, and (slow) the journal it opens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
from service_helpers import serving, workflow

from conjure_actors.cli import build_parser


def test_journal_sync_defaults_to_fsynced_batches() -> None:
    """Without --journal-sync a 201 waits for an fsync (the durable default)."""
    args = build_parser("serve").parse_args(["serve"])
    assert args.journal_sync == "batch"


@pytest.mark.parametrize("level", ["batch", "always", "none"])
def test_journal_sync_accepts_the_journals_policies(level: str) -> None:
    """Each of the journal's sync policies is a valid --journal-sync."""
    args = build_parser("serve").parse_args(["serve", "--journal-sync", level])
    assert args.journal_sync == level


def test_journal_sync_refuses_anything_else(capsys: pytest.CaptureFixture[str]) -> None:
    """An unknown level is a usage error naming the choices."""
    with pytest.raises(SystemExit):
        build_parser("serve").parse_args(["serve", "--journal-sync", "sometimes"])
    assert "batch" in capsys.readouterr().err


@pytest.mark.slow
async def test_journal_sync_none_reaches_the_journal(sim_config: Any, tmp_path: Path) -> None:
    """serve's journal writes under the level asked for, and a job is accepted under it."""
    import httpx

    with trio.fail_after(60):
        async with serving(sim_config, tmp_path, sync="none") as served:
            async with httpx.AsyncClient(base_url=served.url) as http:
                r = await http.post("/api/v2/jobs", json={"workflow": workflow("invert_save.json")})
            assert r.status_code == 201, r.text
            assert served.service.journal.statistics().sync == "none"
