"""Exception groups, translated once: flatten a (nested) group, pick the one error that
matters, and keep ``trio.Cancelled`` propagating.

A trio nursery wraps what its tasks raise in a ``BaseExceptionGroup``; several errors may
arrive together (a task's failure and the ``Cancelled`` of its siblings, or two failures at
once). The code that handles errors wants one: the attempt's ``except`` clauses, the CLI's
one-line message. ``meaningful`` chooses it by a fixed order of importance:

1. ``KeyboardInterrupt`` / ``SystemExit`` (the user or the interpreter wants out);
2. a :class:`~conjure_actors.errors.ConjureError` (raised on purpose, for the user);
3. any other ``Exception`` (a bug or an unexpected failure);
4. only ``Cancelled`` left: no error, the group is a cancellation and must keep propagating.

The others are not lost: ``single_error`` adds a note naming them to the one it raises.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

from conjure_actors.errors import ConjureError

__all__ = ["describe", "leaves", "meaningful", "single_error", "unwrap"]


def leaves(exc: BaseException) -> list[BaseException]:
    """The non-group exceptions inside ``exc`` (itself if it is not a group), in order."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in leaves(sub)]
    return [exc]


def unwrap(exc: BaseException) -> BaseException:
    """The one exception inside (nested) single-member groups, else ``exc`` itself (a group
    of several stays a group: the runtime's supervisors decide on it as a whole)."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _rank(exc: BaseException) -> int:
    if isinstance(exc, KeyboardInterrupt | SystemExit):
        return 0
    if isinstance(exc, ConjureError):
        return 1
    if isinstance(exc, Exception):
        return 2
    if isinstance(exc, trio.Cancelled):
        return 4
    return 3


def meaningful(exc: BaseException) -> BaseException | None:
    """The one leaf of ``exc`` that says what went wrong; None if every leaf is a
    ``trio.Cancelled`` (a cancellation, not an error)."""
    found = leaves(exc)
    best = min(found, key=_rank, default=None)
    if best is None or isinstance(best, trio.Cancelled):
        return None
    return best


@contextlib.contextmanager
def single_error() -> Iterator[None]:
    """Let the meaningful error of a group escape as itself (so ``except SomeError`` sees
    it); a group of nothing but ``Cancelled`` propagates unchanged."""
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = meaningful(group)
        if leaf is None:
            raise
        others = [e for e in leaves(group) if e is not leaf and not isinstance(e, trio.Cancelled)]
        if others:
            leaf.add_note("also: " + "; ".join(describe(e) for e in others))
        # Keep the leaf's own cause (``raise ... from``); drop the group as its context.
        raise leaf from leaf.__cause__


def describe(exc: BaseException) -> str:
    """One line for ``exc``: its message for a ConjureError (written for the user), else its
    type and message (an unexpected error)."""
    if isinstance(exc, BaseExceptionGroup):
        leaf = meaningful(exc)
        if leaf is None:
            return "cancelled"
        exc = leaf
    text = " ".join(str(exc).split())
    if isinstance(exc, ConjureError) and text:
        return text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
