"""Errors of the actor runtime.

The tree (every class also is a :class:`conjure_actors.errors.ConjureError`)::

    ActorError                  something went wrong talking to, or supervising, an actor
    ├── MailboxFullError        ``tell_nowait`` found the mailbox full (names actor + message type)
    ├── AskTimeoutError         ``ask`` got no answer in time (names actor + message type)
    ├── ActorStoppedError       the actor is stopped for good, or stopped before it answered
    ├── NameTakenError          a supervisor already has a child with that name
    └── EscalationError         a supervisor's restart intensity was exceeded; raised out of
                                ``open_actor_system`` when it happens at the root

Messages are one line, never carry message *contents* (only their type name: a message may
hold a token or a URL) and say what to do.
"""

from __future__ import annotations

from conjure_actors.errors import ConjureError


class ActorError(ConjureError):
    """Root of the runtime's errors."""


class MailboxFullError(ActorError):
    """``tell_nowait`` could not queue a message because the actor's mailbox is full."""


class AskTimeoutError(ActorError):
    """An ``ask`` got no reply within its timeout."""


class ActorStoppedError(ActorError):
    """The actor is stopped (or stopped before answering): the message was not handled."""


class NameTakenError(ActorError):
    """A supervisor refused a child because a sibling already has that name."""


class EscalationError(ActorError):
    """A supervisor restarted its children too often and gave up (failing upward)."""
