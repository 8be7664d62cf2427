"""How long a launch of unknown outcome may still land (policy.landing_grace), from what its
answer proves: no answer (or a gateway's timeout) may still be creating a server; an answer
in hand means any server it started exists already, hidden only by the listing's lag."""

from __future__ import annotations

import pytest

from conjure_actors.domain.machines_policy import (
    LAUNCH_LAND_GRACE,
    NOT_VISIBLE_GRACE,
    landing_grace,
)


@pytest.mark.parametrize("status", [None, 504])
def test_a_launch_without_an_answer_waits_the_landing_grace(status: int | None) -> None:
    """A timeout, a lost connection or a gateway's 504: LAUNCH_LAND_GRACE."""
    assert landing_grace(status) == LAUNCH_LAND_GRACE


@pytest.mark.parametrize("status", [500, 502, 503, 599, 200, 201])
def test_a_launch_answered_waits_only_the_listing_lag(status: int) -> None:
    """A 5xx in hand (other than 504), or a 2xx that could not be read: NOT_VISIBLE_GRACE."""
    assert landing_grace(status) == NOT_VISIBLE_GRACE
    assert NOT_VISIBLE_GRACE < LAUNCH_LAND_GRACE
