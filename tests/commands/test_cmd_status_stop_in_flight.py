"""``status LOG`` and ``replay LOG --at`` of a log whose machine's stop was not answered
before the run went down, and that the resume found gone: its figure is said for what it
is (the most it can have cost, to its lease's end; or a settle time past the stop), as the
resume's line says it."""

from __future__ import annotations

from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import LOST_WHILE_DOWN

pytestmark = pytest.mark.usefixtures("no_credentials")


def _resumed(path: Path, *, stopped_at: float, billed_seconds: int, cost: int) -> Path:
    """A run that launched ``s1`` (Ready at 10, lease to 556), decided its stop at 28 and
    went down; its resume found it gone and billed it to ``stopped_at``."""
    with eventlog.open_writer(path, Event) as writer:
        writer.append(ev.SystemStarted(run_id="r", version="0", mode="runcomfy", at=0.0))
        writer.append(
            ev.MachineLaunchRequested(
                request_key="k",
                server_type="medium",
                workflow_version="wv",
                estimated_duration=600,
                at=0.0,
            )
        )
        writer.append(ev.MachineLaunched(request_key="k", server_id="s1", at=1.0))
        writer.append(
            ev.MachineReady(
                server_id="s1",
                service_ready_at=10.0,
                estimated_stopping_at=556.0,
                rate_micros_per_hour=990_000,
                price_table_version="t",
                at=10.0,
            )
        )
        writer.append(ev.MachineStopping(server_id="s1", reason="interrupted", at=28.0))
        writer.append(ev.SystemStarted(run_id="r2", version="0", mode="runcomfy", at=900.0))
        writer.append(ev.MachineLost(server_id="s1", reason=LOST_WHILE_DOWN, at=901.0))
        writer.append(
            ev.MachineStopped(
                server_id="s1",
                stopped_at=stopped_at,
                billed_seconds=billed_seconds,
                cost_micros=cost,
                at=901.0,
            )
        )
    return path


def test_a_bill_to_the_lease_end_is_shown_as_the_most_it_can_have_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Billed to its lease's end (546 s, $0.1502; $0.0050 by its stop): the machine's
    figure and the total are "at most", with what it cost by its stop."""
    path = _resumed(tmp_path / "r.log", stopped_at=556.0, billed_seconds=546, cost=150_150)
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert (
        "  machine s1 (runcomfy): stopped, at most $0.1502 (its stop not answered before the"
        " run went down: billed to its lease's end; if its DELETE left in time, about"
        " $0.0050; RunComfy's bill is exact)\n"
    ) in out
    assert "  cost: at most $0.1502\n" in out


def test_a_bill_past_the_stop_says_so_and_the_total_is_the_bill(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Gone before its lease's end, billed 30 s past its stop: said so; the total is not
    a bound of the lease."""
    path = _resumed(tmp_path / "r.log", stopped_at=58.0, billed_seconds=48, cost=13_200)
    assert main(["status", str(path)]) == 0
    out = capsys.readouterr().out
    assert "s1 (runcomfy): stopped, $0.0132 (its stop not answered before the run went down," in out
    assert "billed 30 s past that stop; RunComfy's bill is exact)" in out
    assert "  cost: $0.0132\n" in out


def test_replays_ledger_says_a_bill_to_the_lease_end_is_the_most_it_can_have_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay LOG --at SEQ``: the ledger's total is "at most", as status and the run's
    summary say it."""
    path = _resumed(tmp_path / "r.log", stopped_at=556.0, billed_seconds=546, cost=150_150)
    assert main(["replay", str(path), "--at", "8"]) == 0
    assert "ledger: total at most $0.1502 over 1 machines;" in capsys.readouterr().out


def test_replays_json_names_the_bills_that_are_the_most_they_can_have_cost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``replay --json``: ``billed.at_most`` lists them, as the text says "at most" (QA7 F6:
    a tool read the worst case as the exact bill)."""
    import json

    path = _resumed(tmp_path / "r.log", stopped_at=556.0, billed_seconds=546, cost=150_150)
    assert main(["replay", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["billed"]["at_most"] == ["s1"]
    exact = _resumed(tmp_path / "e.log", stopped_at=58.0, billed_seconds=48, cost=13_200)
    assert main(["replay", str(exact), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["billed"]["at_most"] == []
