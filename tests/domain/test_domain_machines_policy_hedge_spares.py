"""The spares of a hedged launch that are Ready with nothing waiting are stopped at once,
except those the warm pool keeps (``hedge_spares_to_stop``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.machines_policy import hedge_spares_to_stop


def test_every_spare_is_stopped_without_a_warm_pool() -> None:
    """No warm pool: each spare goes (the busy machines are not idle, not counted)."""
    assert hedge_spares_to_stop(spares=2, idle=2, warm_pool=0) == 2


def test_the_warm_pool_keeps_a_spare_as_its_idle_machine() -> None:
    """Warm pool 1: a lone idle spare is the warm machine; with another idle machine, the
    spare goes and the other is kept."""
    assert hedge_spares_to_stop(spares=1, idle=1, warm_pool=1) == 0
    assert hedge_spares_to_stop(spares=1, idle=2, warm_pool=1) == 1


@given(
    spares=st.integers(0, 6),
    others=st.integers(0, 6),
    warm_pool=st.integers(0, 8),
)
def test_spares_stopped_leave_the_warm_pool_its_idle_machines(
    spares: int, others: int, warm_pool: int
) -> None:
    """Never more than the spares, and the idle machines left are the warm pool's at least
    (or every idle machine, when there are fewer)."""
    idle = spares + others
    stop = hedge_spares_to_stop(spares=spares, idle=idle, warm_pool=warm_pool)
    assert 0 <= stop <= spares
    assert idle - stop >= min(idle, warm_pool)
    assert stop == spares or idle - stop == min(idle, warm_pool)
