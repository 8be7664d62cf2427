"""``replay --at``: a machine draining at that point (``MachineDraining``) is shown draining,
with its reason, in the machines table."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conjure_actors.cli import main

GOLDEN = Path(__file__).resolve().parents[1] / "data" / "golden_v8_draining.log"


def test_replay_shows_a_machine_draining_with_its_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the give-up's record the machine is ``ready, draining (reattach_given_up)``;
    at the end of the log it is ``stopped``."""
    log = shutil.copy(GOLDEN, tmp_path / GOLDEN.name)  # replay writes an index beside it
    assert main(["replay", str(log), "--at", "22"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  srv-1")]
    assert len(rows) == 1
    assert "ready, draining (reattach_given_up)" in rows[0]
    assert main(["replay", str(log), "--at", "28"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  srv-1")]
    assert "draining" not in rows[0]
    assert " stopped " in rows[0]
