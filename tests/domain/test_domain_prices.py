"""Prices and THE billing rule (integer micro-USD)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.errors import PriceTableError
from conjure_actors.domain.prices import (
    DEFAULT_PRICE_TABLE_VERSION,
    billed_seconds,
    cost_micros,
    default_price_table,
    estimate_job_cost,
    format_usd,
    machine_cost_micros,
    price_table_from_mapping,
    price_table_from_toml,
    usd_to_micros,
)


def test_billing_rule_rounds_seconds_up_and_micros_half_up() -> None:
    """100.2 s at $0.79/h bills 101 s = 22,164 micros (0.79e6 * 101 / 3600 = 22163.9)."""
    assert billed_seconds(1000.0, 1100.2) == 101
    assert cost_micros(790_000, 101) == 22_164


def test_never_ready_machine_bills_nothing() -> None:
    """No Ready time, no charge; a stop before Ready bills zero seconds."""
    assert billed_seconds(None, 5000.0) == 0
    assert billed_seconds(100.0, 50.0) == 0


@given(
    st.integers(0, 20_000_000),
    st.floats(0, 1e6, allow_nan=False),
    st.floats(0, 1e5, allow_nan=False),
    st.floats(0, 1e5, allow_nan=False),
)
def test_machine_cost_is_monotonic_in_time(
    rate: int, ready: float, first: float, extra: float
) -> None:
    """Billing later never costs less."""
    a = machine_cost_micros(rate, ready, ready + first)
    b = machine_cost_micros(rate, ready, ready + first + extra)
    assert 0 <= a <= b


@given(st.integers(0, 20_000_000), st.integers(0, 10**7))
def test_cost_is_within_half_a_micro_of_exact(rate: int, seconds: int) -> None:
    """Rounding half up keeps the result within half a micro-dollar of the exact cost."""
    exact = rate * seconds / 3600
    assert abs(cost_micros(rate, seconds) - exact) <= 0.5 + 1e-9


def test_default_tables_match_the_published_prices() -> None:
    """Hobby medium is $0.99/h, Pro 2x-large $3.99/h, versioned."""
    assert default_price_table("hobby").rate("medium") == 990_000
    assert default_price_table("pro").rate("2x-large") == 3_990_000
    assert default_price_table().version == DEFAULT_PRICE_TABLE_VERSION


def test_unknown_server_type_names_it() -> None:
    """Pricing an unknown server type is an error naming it and the known ones."""
    with pytest.raises(PriceTableError, match=r"'gigantic'.*medium"):
        default_price_table().rate("gigantic")


def test_user_override_from_toml_keeps_other_prices() -> None:
    """A TOML override changes the named prices, keeps the rest, and carries its version."""
    table = price_table_from_toml('version = "mine-1"\nplan = "pro"\n[prices]\nmedium = 0.5\n')
    assert table.version == "mine-1"
    assert table.rate("medium") == 500_000
    assert table.rate("large") == 1_390_000


def test_override_without_version_is_refused() -> None:
    """Overridden prices need a version, or bills could not say which prices they used."""
    with pytest.raises(PriceTableError, match="version"):
        price_table_from_mapping({"prices": {"medium": 1}})


def test_unknown_price_table_key_is_named() -> None:
    """A typo in the price table is reported by name."""
    with pytest.raises(PriceTableError, match="'price'"):
        price_table_from_mapping({"price": {}})


def test_usd_text_converts_exactly() -> None:
    """Decimal text converts without float error; garbage is refused."""
    assert usd_to_micros("0.79") == 790_000
    assert usd_to_micros("2.1234565") == 2_123_457
    with pytest.raises(PriceTableError):
        usd_to_micros("lots")


def test_format_usd_rounds_for_display() -> None:
    """Micros print as dollars with four decimals."""
    assert format_usd(1_234_567) == "$1.2346"
    assert format_usd(0) == "$0.0000"


def test_estimate_includes_the_idle_tail() -> None:
    """A job's estimate is its run time plus the idle time it may leave billed."""
    table = default_price_table("pro")
    assert estimate_job_cost(table, "medium", 3000, idle_seconds=600) == 790_000
