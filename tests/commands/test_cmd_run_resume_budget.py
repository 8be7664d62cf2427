"""``run --resume LOG --budget USD`` on a log whose budget was changed at run time: the same
--budget as the log's last start keeps the log's, another replaces it (through the CLI,
its file log and the line on the terminal)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

import eventlog
from conjure_actors.cli import main
from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import budget_micros
from conjure_actors.domain.state import apply_all, initial_state

pytestmark = pytest.mark.usefixtures("no_credentials")


def _lowered_at_run_time(path: Path) -> None:
    """A run started with --budget 1.00 whose budget was set to 0.03 at run time."""
    with eventlog.open_writer(path, ev.Event, sync="none") as writer:
        writer.append_many(
            [
                ev.SystemStarted(run_id="r1", version="0", mode="simulated", at=1.0),
                ev.BudgetSet(limit_micros=budget_micros(1.0), at=1.0, from_start=True),
                ev.BudgetSet(limit_micros=budget_micros(0.03), at=2.0),
                ev.SystemStopped(reason="error", at=3.0),
            ]
        )


def _resume(
    path: Path, budget: str, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> list[str]:
    """Resume ``path`` with ``--budget budget``; the budget lines it logged (the terminal's
    handler is pytest's here)."""
    with caplog.at_level(logging.WARNING, logger="conjure_actors"):
        code = main(["run", "--resume", str(path), "--budget", budget, "--json"])
    out, err = capsys.readouterr()
    assert (code, json.loads(out.splitlines()[-1])["type"]) == (0, "run.summary"), err
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget:")]


def _budget_of(path: Path) -> int | None:
    state = apply_all(initial_state(), (r.event for r in eventlog.read(path, ev.Event)))
    return state.budget.limit_micros


def test_resume_with_the_same_budget_keeps_the_one_set_at_run_time(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """--budget 1.00 again: the log keeps its $0.03, and the terminal says why."""
    _lowered_at_run_time(Path("b.log"))
    lines = _resume(Path("b.log"), "1.00", capsys, caplog)
    assert _budget_of(Path("b.log")) == budget_micros(0.03)
    assert lines == [
        "budget: keeping the $0.03 set at run time (PUT /api/conjure/budget); --budget 1.00"
        " is what this log was started with: pass a different --budget to replace it"
    ]


@pytest.mark.slow
def test_resume_with_another_budget_replaces_the_one_set_at_run_time(
    capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """--budget 2: the operator changed the flag since the last start, it wins."""
    _lowered_at_run_time(Path("b.log"))
    lines = _resume(Path("b.log"), "2", capsys, caplog)
    assert _budget_of(Path("b.log")) == budget_micros(2.0)
    assert lines == [
        "budget: --budget 2.00 replaces the $0.03 budget this log ends with (its last start"
        " had --budget 1.00); start without --budget to keep the log's"
    ]
