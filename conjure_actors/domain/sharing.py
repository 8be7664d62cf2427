"""Sharing in the folded state: one object for a value many jobs hold (memory per job).

``serve`` keeps finished jobs readable for days, so what the state holds per job is its
memory bill. Decoding gives every event (and every snapshot) new ``str`` objects, so a value
that 10,000 jobs share (a workflow hash, the server id, ``image/png``, an output kind, a node
id) would be stored 10,000 times; and a job makes several containers that most jobs leave
empty. The fold therefore stores (readers see the same values, ``==`` is unchanged):

- enum-like words (node ids and class names, kinds, content types, tags, error types) through
  :func:`sys.intern` (a small, bounded vocabulary);
- values that may repeat but are not a vocabulary (hashes, client ids, file names, reasons)
  through :func:`share` and :data:`SHARED`, a table that forgets everything once it holds
  :data:`SHARED_MAX` values: its memory is bounded whatever goes through it, and a value
  that recurs is shared again right after;
- an empty per-job container as :data:`EMPTY_LIST` / :data:`EMPTY_DICT`: one shared empty
  ``list`` / ``dict`` that refuses to change (a subclass: msgspec, ``json`` and ``==`` treat
  it as the plain empty one). The fold replaces it with a new container before adding to
  it; nothing else may write to the state anyway.
"""

from __future__ import annotations

from typing import Any, Final, NoReturn

__all__ = [
    "EMPTY_DICT",
    "EMPTY_LIST",
    "SHARED",
    "SHARED_MAX",
    "dict_or_empty",
    "list_or_empty",
    "share",
]

SHARED_MAX: Final = 2048
"""Values a state's :func:`share` table holds before it starts again (bounded memory)."""


def _read_only(*args: Any, **kwargs: Any) -> NoReturn:
    raise TypeError("a shared empty container of the state is read-only (apply replaces it)")


class _EmptyList(list[Any]):
    """The shared empty list: every mutator raises (a write outside the fold is a bug)."""

    __slots__ = ()
    append = extend = insert = remove = pop = clear = sort = reverse = _read_only
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only


class _EmptyDict(dict[Any, Any]):
    """The shared empty dict: every mutator raises (a write outside the fold is a bug)."""

    __slots__ = ()
    __setitem__ = __delitem__ = pop = popitem = clear = update = setdefault = _read_only
    __ior__ = _read_only


EMPTY_LIST: Final[list[Any]] = _EmptyList()
EMPTY_DICT: Final[dict[Any, Any]] = _EmptyDict()


def list_or_empty(items: Any) -> list[Any]:
    """A new list of ``items``, or :data:`EMPTY_LIST` when there are none."""
    return list(items) if items else EMPTY_LIST


def dict_or_empty(items: Any) -> dict[Any, Any]:
    """A new dict of ``items``, or :data:`EMPTY_DICT` when there are none."""
    return dict(items) if items else EMPTY_DICT


SHARED: Final[dict[str, str]] = {}
"""The :func:`share` table of the fold and of records as they are decoded
(``__attrs_post_init__``, so a duplicate's memory is reused by the next record rather than
left as a hole: serve's resident memory after a restart from a snapshot). One table for the
process: values only, bounded, so it has no effect on any result; every state shares it."""


def share(table: dict[str, str], value: str) -> str:
    """The one object ``table`` (:data:`SHARED`) holds equal to ``value`` (``value`` itself
    the first time); the table starts again once it holds :data:`SHARED_MAX` values."""
    got = table.get(value)
    if got is None:
        if len(table) >= SHARED_MAX:
            table.clear()
        table[value] = got = value
    return got
