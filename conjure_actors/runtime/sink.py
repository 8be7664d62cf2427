"""Where lifecycle events go: an :class:`EventSink` (the journal), and crash-message scrubbing.

The runtime depends on nothing but this protocol: ``eventlog.Journal`` satisfies it
(``await journal.append(event) -> Record``), and so does a list-backed fake in tests.
``journal=None`` means "do not journal".

An :class:`~conjure_actors.runtime.events.ActorCrashed` event carries the exception's message,
which may contain a secret (a machine URL, a token echoed by a server). Messages therefore go
through a *scrubber* (``str -> str``) and are then truncated to :data:`MAX_MESSAGE`
characters. The default scrubber redacts anything that looks like a URL or a bearer token;
callers with more secrets pass their own (it should still call :func:`default_scrub`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final, Protocol

import trio

MAX_MESSAGE: Final = 200
"""Crash messages longer than this are truncated (with an ellipsis)."""

Scrubber = Callable[[str], str]

_URL: Final = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.-]*://\S+")
_BEARER: Final = re.compile(r"(?i)\b(bearer|token|api[_-]?key)(\s*[=:]?\s*)\S+")


class EventSink(Protocol):
    """Anything events can be appended to (``eventlog.Journal`` is one)."""

    async def append(self, event: Any, /) -> object: ...


class ListSink:
    """An in-memory sink that keeps every event in :attr:`events` (tests, debugging)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    async def append(self, event: Any, /) -> object:
        self.events.append(event)
        return None


def default_scrub(message: str) -> str:
    """Redact URLs and bearer tokens/API keys from an exception message."""
    message = _URL.sub("<url>", message)
    return _BEARER.sub(r"\1\2<redacted>", message)


def crash_message(exc: BaseException, scrub: Scrubber) -> tuple[str, str]:
    """``(type name, scrubbed + truncated message)`` for an ``ActorCrashed`` event."""
    text = scrub(str(exc)).replace("\n", " ")
    if len(text) > MAX_MESSAGE:
        text = text[: MAX_MESSAGE - 1] + "…"
    return type(exc).__name__, text


async def emit_many(sink: EventSink | None, events: list[Any]) -> None:
    """Append ``events`` in order, shielded as :func:`emit`: in one append where the sink
    takes a batch (``append_many``: ``eventlog.Journal``), one by one elsewhere."""
    if sink is None or not events:
        return
    if len(events) == 1:
        await emit(sink, events[0])
        return
    append_many = getattr(sink, "append_many", None)
    with trio.CancelScope(shield=True):
        if append_many is not None:
            await append_many(events)
            return
        for event in events:
            await sink.append(event)


async def emit(sink: EventSink | None, event: Any) -> None:
    """Append ``event`` to ``sink``, shielded: a lifecycle event is never half-written because
    the supervisor that emits it was being cancelled (the journal's own deadlines apply).
    A sink with ``append_shielded`` (``eventlog.Journal``) is trusted to do that itself,
    cheaper than a scope around every append (issue 16)."""
    if sink is None:
        return
    append_shielded = getattr(sink, "append_shielded", None)
    if append_shielded is not None:
        await append_shielded(event)
        return
    with trio.CancelScope(shield=True):
        await sink.append(event)
