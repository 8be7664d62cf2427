"""The one conversion of a budget from USD to the micro-USD the ledger compares with."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.cost_policy import budget_micros as usd_to_micros


@given(st.floats(min_value=0, max_value=1_000_000, allow_nan=False))
def test_a_budget_becomes_the_nearest_micro_usd(usd: float) -> None:
    """A budget in USD is logged as the nearest whole micro-USD; None is no limit."""
    micros = usd_to_micros(usd)
    assert micros is not None
    assert abs(micros - usd * 1_000_000) <= 0.5 + 1e-6 * usd
    assert usd_to_micros(None) is None


@pytest.mark.parametrize("usd", [-0.01, math.inf, math.nan])
def test_a_negative_or_infinite_budget_is_refused(usd: float) -> None:
    """A budget below zero, infinite or NaN is not a budget."""
    with pytest.raises(ValueError, match="not a budget"):
        usd_to_micros(usd)
