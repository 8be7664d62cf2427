"""The budget's notices say what was refused, on what figures, and what follows; never that
no launch or renewal will come (the pool asks again, and one that fits later is granted)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain import events as ev
from conjure_actors.domain.describe import describe

_MICROS = st.integers(min_value=0, max_value=10**9)


@given(
    what=st.sampled_from(["launch", "renewal"]),
    spent=_MICROS,
    committed=_MICROS,
    limit=_MICROS,
    needed=st.none() | _MICROS,
    server_id=st.none() | st.just("s-1"),
)
def test_a_refusal_never_says_nothing_more_will_be_granted(
    what: str, spent: int, committed: int, limit: int, needed: int | None, server_id: str | None
) -> None:
    """Whatever the figures (and in logs written before ``needed_micros``), the notice
    promises no end of launches or renewals: it names the refusal and the way out."""
    e = ev.BudgetLimitReached(
        what=what,
        spent_micros=spent,
        committed_micros=committed,
        limit_micros=limit,
        needed_micros=needed,
        server_id=server_id,
        at=1.0,
    )
    subject, summary = describe(e)
    assert subject == "budget"
    assert "no more" not in summary
    assert summary.startswith("launch refused" if what == "launch" else "lease renewal")
    assert "asked again" in summary
    assert "raise --budget" in summary


def test_a_refused_renewal_names_its_machine_and_figures() -> None:
    """What it needed, what was left of which budget after what spent and committed."""
    e = ev.BudgetLimitReached(
        what="renewal",
        spent_micros=37_425,
        committed_micros=40_197,
        limit_micros=90_000,
        needed_micros=30_000,
        server_id="s-1",
        at=1.0,
    )
    _, summary = describe(e)
    assert summary.startswith(
        "lease renewal of machine s-1 refused: needs $0.0300, $0.0124 of the $0.0900 budget"
        " left after $0.0374 spent and $0.0402 committed; the machine takes no new job"
    )


def test_a_refused_launch_says_what_the_waiting_jobs_do() -> None:
    """They wait for a machine running or starting, fail with none, and it is asked again."""
    e = ev.BudgetLimitReached(
        what="launch",
        spent_micros=0,
        committed_micros=165_000,
        limit_micros=200_000,
        needed_micros=165_000,
        at=1.0,
    )
    _, summary = describe(e)
    assert summary.startswith(
        "launch refused: needs $0.1650, $0.0350 of the $0.2000 budget left after $0.0000"
        " spent and $0.1650 committed; jobs waiting for a machine wait for one running or"
        " starting (with none, they fail)"
    )


def test_a_launch_refused_says_left_as_the_notice_does() -> None:
    """``LaunchRefused``'s "left" is the notice's: the budget less spent and committed; and
    it names the job as waiting, not as the one refused a machine (a launch is for the
    demand: the ask that named a job may lose the race to another that is granted, and
    the job then runs; "launch for job j1 refused", then j1 ran)."""
    e = ev.LaunchRefused(job_id="j1", estimate_micros=165_000, remaining_micros=35_000, at=1.0)
    assert describe(e) == (
        "budget",
        "launch refused (job j1 waiting): needs $0.1650, $0.0350 of the budget left after"
        " what is spent and committed",
    )


def test_the_warning_and_the_excess_say_spent_of_the_budget_as_the_others() -> None:
    """``$X of the $Y budget spent``, as the cost lines say it; the excess says what the
    run does about it (it said only "EXCEEDED: spent $X of $Y")."""
    warning = ev.BudgetWarning(spent_micros=80_000, limit_micros=100_000, at=1.0)
    assert describe(warning)[1] == "warning: $0.0800 of the $0.1000 budget spent"
    exceeded = ev.BudgetExceeded(spent_micros=100_500, limit_micros=100_000, at=1.0)
    assert describe(exceeded)[1] == (
        "exceeded: $0.1005 of the $0.1000 budget spent; launching stops, the unfinished jobs"
        " are cancelled and every machine is stopped; raise --budget (serve: PUT"
        " /api/conjure/budget)"
    )


def test_a_budget_lowered_below_spent_and_committed_is_said_over_not_a_negative_left() -> None:
    """The budget set below what is spent and committed: "$0.3000 over", in the notice and
    in the refusal beside it, not "-$0.3000 of the $1.0000 budget left"."""
    notice = ev.BudgetLimitReached(
        what="launch",
        spent_micros=900_000,
        committed_micros=400_000,
        limit_micros=1_000_000,
        needed_micros=500_000,
        at=1.0,
    )
    refused = ev.LaunchRefused(
        job_id="j1", estimate_micros=500_000, remaining_micros=-300_000, at=1.0
    )
    assert (
        "needs $0.5000, the $1.0000 budget is $0.3000 over after $0.9000 spent and $0.4000"
        in (describe(notice)[1])
    )
    assert describe(refused)[1] == (
        "launch refused (job j1 waiting): needs $0.5000, the budget $0.3000 over after what is"
        " spent and committed"
    )
    assert "-$" not in describe(notice)[1] + describe(refused)[1]


def test_a_budget_a_start_set_is_told_apart_from_one_set_at_run_time() -> None:
    at_start = describe(ev.BudgetSet(limit_micros=1_000_000, at=1.0, from_start=True))
    at_run_time = describe(ev.BudgetSet(limit_micros=30_000, at=2.0))
    assert at_start == ("budget", "set to $1.0000 (--budget at start)")
    assert at_run_time == ("budget", "set to $0.0300")
