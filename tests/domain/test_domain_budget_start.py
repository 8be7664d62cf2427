"""A start's budget against the log's (cost_policy.start_budget) and the fold of the
``BudgetSet`` that records it: a restart with the same --budget keeps a budget set at run
time, another --budget replaces it, a log without the record keeps the old rule."""

from __future__ import annotations

from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as hs

from conjure_actors.domain import events as ev
from conjure_actors.domain.cost_policy import StartBudget, start_budget
from conjure_actors.domain.events import Event
from conjure_actors.domain.state import (
    Budget,
    apply,
    apply_all,
    initial_state,
    state_from_builtins,
    state_to_builtins,
)

T0 = 1_800_000_000.0


def test_no_configured_budget_keeps_the_logs() -> None:
    """A start without --budget keeps the log's budget, whatever the log recorded."""
    assert start_budget(Budget(limit_micros=30_000, start_micros=1_000_000), None) is (
        StartBudget.NONE
    )


def test_the_last_starts_budget_again_keeps_the_logs() -> None:
    """The same --budget as the log's last start: the log's (run-time) budget is kept."""
    budget = Budget(limit_micros=30_000, start_micros=1_000_000)
    assert start_budget(budget, 1_000_000) is StartBudget.KEEP


def test_another_budget_than_the_last_starts_is_set() -> None:
    """A --budget changed since the log's last start is set."""
    budget = Budget(limit_micros=30_000, start_micros=1_000_000)
    assert start_budget(budget, 500_000) is StartBudget.SET


def test_a_log_without_the_record_lets_the_configured_budget_win() -> None:
    """A log written before starts recorded their budget: the configured one is set."""
    assert start_budget(Budget(limit_micros=30_000), 1_000_000) is StartBudget.SET


def test_an_old_budget_set_decodes_as_set_at_run_time() -> None:
    """A BudgetSet written before ``from_start`` existed decodes, and records no start."""
    data = b'{"type":"cost.budget_set","limit_micros":1000000,"at":1800000000.0}'
    event = msgspec.json.decode(data, type=Event)
    assert event == ev.BudgetSet(limit_micros=1_000_000, at=T0)
    state = apply(initial_state(), event)
    assert (state.budget.limit_micros, state.budget.start_micros) == (1_000_000, None)


def test_a_state_saved_before_the_record_decodes_with_none_recorded() -> None:
    """A snapshot (or --json state) without ``budget.start_micros`` decodes: none recorded."""
    data = state_to_builtins(apply(initial_state(), ev.BudgetSet(limit_micros=30_000, at=T0)))
    del data["budget"]["start_micros"]
    state = state_from_builtins(msgspec.msgpack.decode(msgspec.msgpack.encode(data)))
    assert state.budget == Budget(limit_micros=30_000)


def test_a_starts_budget_set_records_it_and_sets_it() -> None:
    """A start's BudgetSet that changes the budget sets it (warning reset) and records it."""
    state = apply_all(
        initial_state(),
        [
            ev.BudgetSet(limit_micros=100, at=T0),
            ev.BudgetWarning(spent_micros=90, limit_micros=100, at=T0 + 1),
            ev.BudgetSet(limit_micros=1_000, at=T0 + 2, from_start=True),
        ],
    )
    assert state.budget == Budget(limit_micros=1_000, start_micros=1_000)


def test_a_starts_budget_equal_to_the_one_in_force_is_only_recorded() -> None:
    """A start's BudgetSet of the budget in force records it and keeps what was done about it."""
    state = apply_all(
        initial_state(),
        [
            ev.BudgetSet(limit_micros=100, at=T0),
            ev.BudgetExceeded(spent_micros=100, limit_micros=100, at=T0 + 1),
            ev.BudgetSet(limit_micros=100, at=T0 + 2, from_start=True),
        ],
    )
    assert state.budget == Budget(limit_micros=100, warned=True, exceeded=True, start_micros=100)


def test_a_run_time_budget_set_keeps_the_starts_record() -> None:
    """PUT /api/conjure/budget changes the budget in force, not the last start's record."""
    state = apply_all(
        initial_state(),
        [
            ev.BudgetSet(limit_micros=1_000, at=T0, from_start=True),
            ev.BudgetSet(limit_micros=30, at=T0 + 1),
        ],
    )
    assert (state.budget.limit_micros, state.budget.start_micros) == (30, 1_000)


# --------------------------------------------------------------------- the property

# A history of starts (each with a --budget, or None: none) and run-time sets (PUT).
_MICROS = hs.sampled_from([0, 30_000, 500_000, 1_000_000])
_OPS = hs.lists(
    hs.one_of(
        hs.tuples(hs.just("start"), hs.none() | _MICROS),
        hs.tuples(hs.just("put"), hs.none() | _MICROS),
    ),
    max_size=12,
)


def _live(ops: list[tuple[str, int | None]]) -> tuple[list[Any], Any]:
    """The events the runtime emits for ``ops`` (the start-up's rule, the API's sets),
    decided against the state as it goes, and that state."""
    state = initial_state()
    events: list[Any] = []
    for i, (op, micros) in enumerate(ops):
        at = T0 + i
        if op == "put":
            event = ev.BudgetSet(limit_micros=micros, at=at)
        elif start_budget(state.budget, micros) is StartBudget.SET:
            event = ev.BudgetSet(limit_micros=micros, at=at, from_start=True)
        else:
            continue
        events.append(event)
        apply(state, event)
    return events, state


@given(_OPS)
def test_the_budget_in_force_is_the_last_put_unless_a_later_start_changed_its_flag(
    ops: list[tuple[str, int | None]],
) -> None:
    """Any history: the budget in force is the last run-time set, unless a later start was
    given a --budget other than the one the last start given one had (then that start's);
    before any, the first start's."""
    _, state = _live(ops)
    expected: int | None = None
    last_flag: int | None = None
    for op, micros in ops:
        if op == "put":
            expected = micros
        elif micros is not None:
            if micros != last_flag:
                expected = micros
            last_flag = micros
    assert state.budget.limit_micros == expected


@given(_OPS)
def test_the_replay_of_the_encoded_log_folds_to_the_live_state(
    ops: list[tuple[str, int | None]],
) -> None:
    """The log, encoded and decoded, folds to the state the runtime had."""
    events, live = _live(ops)
    decoded = [msgspec.json.decode(msgspec.json.encode(e), type=Event) for e in events]
    assert state_to_builtins(apply_all(initial_state(), decoded)) == state_to_builtins(live)
