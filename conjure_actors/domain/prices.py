"""RunComfy prices and THE billing rule, in integer micro-USD.

Money is an ``int`` of micro-USD everywhere (1 USD = 1_000_000 micros), so a replayed log
reproduces the bill exactly. The billing rule, shared with the RunComfy simulator:

- a machine costs nothing until ``service_ready_at`` (the server's Ready time), then per
  second until the stop call returned 200 (``stopped_at``);
- ``billed_seconds = max(0, ceil(stopped_at - service_ready_at))``;
- ``cost_micros = (rate_micros_per_hour * billed_seconds + 1800) // 3600`` (round half up).

Prices change, so they live in a versioned :class:`PriceTable` that users can override (a
dict or TOML text); every cost event records the rate and the table version it used.

Two clocks meet in that rule: ``service_ready_at`` (and a lease's ``estimated_stopping_at``)
is RunComfy's, from its server record; ``stopped_at`` is ours, read when the ``DELETE``'s
answer arrived (RunComfy's answer carries no stop time). A constant offset between the two
(theirs minus ours: D seconds) moves every bill by -D seconds, and the cost so far of a
running machine and the lease decisions by the same D. It is not corrected: the only
measure of it, the ``Date`` header, has a one-second resolution (truncated), so with both
clocks kept by NTP (D well under a second) a correction from it would add up to a second
of error where there is none. A correction is worth it only for a large D (our process
clock, read once at start and advanced by ``CLOCK_BOOTTIME``, keeps its start-time error
when NTP steps the system clock later: a concern for a ``serve`` that lives for days); it
must then bound D from many answers (each gives ``Date - received <= D < Date + 1 -
sent``), act only when the bound excludes zero by more than a second, and turn the
server's times into ours where they enter the log, with the offset in the event.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Final

import attrs

from conjure_actors.domain.errors import PriceTableError

__all__ = [
    "DEFAULT_PLAN",
    "DEFAULT_PRICE_TABLE_VERSION",
    "MAX_BUDGET_USD",
    "MICROS_PER_USD",
    "PRICE_TABLES",
    "PriceTable",
    "billed_seconds",
    "cost_micros",
    "default_price_table",
    "estimate_job_cost",
    "format_usd",
    "machine_cost_micros",
    "price_table_from_mapping",
    "price_table_from_toml",
    "usd_to_micros",
]

MICROS_PER_USD: Final = 1_000_000
MAX_BUDGET_USD: Final = 1_000_000
"""The largest spending limit accepted (``--budget``, ``budget.usd``, ``PUT
/api/conjure/budget``): more is a typo, and its micro-USD would not fit the log's integers."""
DEFAULT_PRICE_TABLE_VERSION: Final = "runcomfy-2025-10"
DEFAULT_PLAN: Final = "hobby"


def usd_to_micros(value: str | int | float | Decimal) -> int:
    """``"0.79"`` -> ``790000``; exact for decimal text (floats go through their repr)."""
    try:
        amount = Decimal(str(value)) if not isinstance(value, Decimal) else value
    except InvalidOperation as exc:
        raise PriceTableError(f"not an amount of USD: {value!r}") from exc
    if not amount.is_finite():
        raise PriceTableError(f"not an amount of USD: {value!r}")
    micros = amount * MICROS_PER_USD
    return int(micros.to_integral_value(rounding="ROUND_HALF_UP"))


def format_usd(micros: int, places: int = 4) -> str:
    """``1234567`` -> ``"$1.2346"`` (rounded half up to ``places`` decimals, exact math)."""
    amount = Decimal(micros) / MICROS_PER_USD
    quantum = Decimal(1).scaleb(-places)
    text = str(amount.quantize(quantum, rounding="ROUND_HALF_UP"))
    return f"-${text[1:]}" if text.startswith("-") else f"${text}"


def billed_seconds(service_ready_at: float | None, stopped_at: float) -> int:
    """Seconds billed for a machine Ready at ``service_ready_at`` and stopped at ``stopped_at``.

    A machine that never became Ready (``None``) bills nothing.
    """
    if service_ready_at is None:
        return 0
    return max(0, math.ceil(stopped_at - service_ready_at))


def cost_micros(rate_micros_per_hour: int, seconds: int) -> int:
    """Cost of ``seconds`` at an hourly rate, rounded half up to the micro-dollar."""
    return (rate_micros_per_hour * seconds + 1800) // 3600


def machine_cost_micros(
    rate_micros_per_hour: int, service_ready_at: float | None, until: float
) -> int:
    """Cumulative cost of a machine from its Ready time to ``until`` (the billing rule)."""
    return cost_micros(rate_micros_per_hour, billed_seconds(service_ready_at, until))


def _sorted_prices(prices: Mapping[str, int]) -> dict[str, int]:
    return dict(sorted(prices.items()))


@attrs.frozen
class PriceTable:
    """Hourly prices per ``server_type`` for one plan, with the version recorded in events."""

    version: str
    plan: str
    hourly_micros: dict[str, int] = attrs.field(converter=_sorted_prices)

    def rate(self, server_type: str) -> int:
        """The hourly rate in micros of ``server_type``; unknown types are a clear error."""
        try:
            return self.hourly_micros[server_type]
        except KeyError:
            known = ", ".join(self.hourly_micros)
            raise PriceTableError(
                f"no price for server type {server_type!r} in price table {self.version}"
                f" ({self.plan}); known: {known}"
            ) from None


def _table(version: str, plan: str, prices: Mapping[str, str]) -> PriceTable:
    return PriceTable(version, plan, {k: usd_to_micros(v) for k, v in prices.items()})


# RunComfy's on-demand prices (runcomfy.md). The ``server_type`` strings of X-Large Plus and
# 3X-Large are not documented; the names below are our guesses, ``2xl-turbo`` is unconfirmed.
PRICE_TABLES: Final[Mapping[str, PriceTable]] = {
    "hobby": _table(
        DEFAULT_PRICE_TABLE_VERSION,
        "hobby",
        {
            "medium": "0.99",
            "large": "1.75",
            "extra-large": "2.50",
            "extra-large-plus": "2.99",
            "2x-large": "4.99",
            "2xl-turbo": "7.49",
            "3x-large": "8.75",
        },
    ),
    "pro": _table(
        DEFAULT_PRICE_TABLE_VERSION,
        "pro",
        {
            "medium": "0.79",
            "large": "1.39",
            "extra-large": "1.99",
            "extra-large-plus": "2.15",
            "2x-large": "3.99",
            "2xl-turbo": "5.99",
            "3x-large": "6.99",
        },
    ),
}


def default_price_table(plan: str = DEFAULT_PLAN) -> PriceTable:
    """The built-in table of ``plan`` (``hobby`` or ``pro``)."""
    try:
        return PRICE_TABLES[plan]
    except KeyError:
        raise PriceTableError(
            f"unknown plan {plan!r}: use one of {', '.join(PRICE_TABLES)}"
        ) from None


def price_table_from_mapping(data: Mapping[str, object]) -> PriceTable:
    """A table from a dict such as ``{"version": "mine-1", "plan": "pro", "prices":
    {"medium": 0.79}}``. Missing ``prices`` entries fall back to the built-in plan's; a
    ``version`` is required as soon as any price is overridden (bills must say which)."""
    unknown = sorted(set(data) - {"version", "plan", "prices"})
    if unknown:
        raise PriceTableError(f"unknown price table key {unknown[0]!r}: use version, plan, prices")
    plan = data.get("plan", DEFAULT_PLAN)
    if not isinstance(plan, str):
        raise PriceTableError("price table key 'plan' must be a string (hobby or pro)")
    base = default_price_table(plan)
    prices = data.get("prices", {})
    if not isinstance(prices, Mapping):
        raise PriceTableError("price table key 'prices' must be a table of server_type = USD")
    version = data.get("version", base.version if not prices else None)
    if not isinstance(version, str) or not version:
        raise PriceTableError("price table key 'version' is required when prices are overridden")
    merged = dict(base.hourly_micros)
    for server_type, usd in prices.items():
        if not isinstance(usd, int | float | str) or isinstance(usd, bool):
            raise PriceTableError(f"price table key 'prices.{server_type}' must be a number")
        micros = usd_to_micros(usd)
        if micros < 0:
            raise PriceTableError(f"price table key 'prices.{server_type}' is negative")
        merged[str(server_type)] = micros
    return PriceTable(version, plan, merged)


def price_table_from_toml(text: str) -> PriceTable:
    """A table from TOML text (same keys as :func:`price_table_from_mapping`)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"price table is not valid TOML: {exc}") from exc
    return price_table_from_mapping(data)


def estimate_job_cost(
    table: PriceTable,
    server_type: str,
    job_seconds: float,
    *,
    idle_seconds: float = 0.0,
) -> int:
    """Estimated micros one job adds to the bill: its run time plus the idle tail it may
    leave (``idle_seconds``, e.g. the idle timeout of a machine launched for it). Start-up
    is free (billing starts at Ready)."""
    seconds = max(0, math.ceil(job_seconds + idle_seconds))
    return cost_micros(table.rate(server_type), seconds)
