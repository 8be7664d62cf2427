"""errgroups: one meaningful error out of (nested) exception groups; Cancelled propagates."""

from __future__ import annotations

import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.errgroups import describe, leaves, meaningful, single_error, unwrap
from conjure_actors.errors import ConjureError, UsageError


def _cancelled() -> trio.Cancelled:
    """A real trio.Cancelled (it cannot be constructed directly): caught from a cancel."""

    async def catch() -> trio.Cancelled:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                await trio.lowlevel.checkpoint()
            except trio.Cancelled as exc:
                return exc
        raise AssertionError("not cancelled")

    return trio.run(catch)


def test_leaves_flattens_nested_groups_in_order() -> None:
    """Every non-group exception, depth first, in order."""
    a, b, c = ValueError("a"), KeyError("b"), OSError("c")
    group = ExceptionGroup("g", [a, ExceptionGroup("h", [b, c])])
    assert leaves(group) == [a, b, c]
    assert leaves(a) == [a]


def test_meaningful_prefers_interrupt_then_conjure_error_then_any() -> None:
    """KeyboardInterrupt beats a ConjureError, which beats an unexpected error."""
    usage, bug = UsageError("bad flag"), KeyError("x")
    assert meaningful(BaseExceptionGroup("g", [bug, usage])) is usage
    stop = KeyboardInterrupt()
    assert meaningful(BaseExceptionGroup("g", [bug, usage, stop])) is stop


def test_only_cancelled_is_no_error_and_propagates_as_is() -> None:
    """A group of nothing but Cancelled: no meaningful error; single_error re-raises it."""
    group = BaseExceptionGroup("g", [_cancelled(), _cancelled()])
    assert meaningful(group) is None
    with pytest.raises(BaseExceptionGroup) as caught, single_error():
        raise group
    assert caught.value is group


def test_single_error_raises_the_leaf_with_the_others_noted() -> None:
    """The meaningful leaf escapes as itself, its cause kept, the others in a note."""
    cause = OSError("disk")
    leaf = ConjureError("log full")
    leaf.__cause__ = cause
    with pytest.raises(ConjureError) as caught, single_error():
        raise BaseExceptionGroup("g", [KeyError("k"), leaf, _cancelled()])
    assert caught.value is leaf
    assert caught.value.__cause__ is cause
    assert caught.value.__notes__ == ["also: KeyError: 'k'"]


def test_describe_is_one_line() -> None:
    """A ConjureError by its message; anything else with its type; never a newline."""
    assert describe(UsageError("no such\nfile")) == "no such file"
    assert describe(KeyError("outputs")) == "KeyError: 'outputs'"
    assert describe(ExceptionGroup("g", [ValueError("v")])) == "ValueError: v"


@given(st.lists(st.sampled_from(["usage", "bug", "cancel"]), min_size=1, max_size=6))
def test_meaningful_is_cancelled_only_when_every_leaf_is(kinds: list[str]) -> None:
    """meaningful() is None exactly when every leaf is a Cancelled; else it is a leaf."""
    make = {"usage": lambda: UsageError("u"), "bug": lambda: KeyError("b"), "cancel": _cancelled}
    excs = [make[k]() for k in kinds]
    found = meaningful(BaseExceptionGroup("g", excs))
    if all(k == "cancel" for k in kinds):
        assert found is None
    else:
        assert found in excs
        assert not isinstance(found, trio.Cancelled)
        if "usage" in kinds:
            assert isinstance(found, UsageError)


def test_unwrap_takes_the_one_error_out_of_nested_single_groups_only() -> None:
    """A chain of one-member groups unwraps to its error; a group of two stays a group."""
    inner = ValueError("x")
    assert unwrap(ExceptionGroup("a", [ExceptionGroup("b", [inner])])) is inner
    pair = ExceptionGroup("c", [ValueError("y"), KeyError("z")])
    assert unwrap(pair) is pair
    assert unwrap(inner) is inner
