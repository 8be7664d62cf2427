"""Errors of the domain layer (pure decisions and workflow graphs)::

    ConjureError
    └── DomainError                    a command the domain refuses, or input it cannot use
        ├── WorkflowError              a workflow graph that cannot run (also a UsageError:
        │                              exit 2); ``problems`` lists every one
        ├── IllegalTransitionError     a job asked to move between statuses illegally
        ├── CommandRejectedError       a command the state does not allow (unknown job,
        │                              duplicate id, machine full...)
        └── PriceTableError            a price table (or server type) we cannot use (UsageError)

Messages are one line and never carry a token or a machine URL.
"""

from __future__ import annotations

from collections.abc import Sequence

from conjure_actors.errors import ConjureError, UsageError


class DomainError(ConjureError):
    """Root of the domain layer's errors."""


class WorkflowError(DomainError, UsageError):
    """A workflow graph (or its bindings) that cannot run; ``problems`` holds every problem.

    The message is one line: the count and the problems joined by ``"; "``.
    """

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        self.source = source
        where = f"{source}: " if source else ""
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{where}workflow has {count} {noun}: " + "; ".join(self.problems))


class IllegalTransitionError(DomainError):
    """A job cannot move from ``from_status`` to ``to_status``."""

    def __init__(self, job_id: str, from_status: str, to_status: str) -> None:
        self.job_id = job_id
        self.from_status = from_status
        self.to_status = to_status
        super().__init__(
            f"job {job_id}: illegal transition {from_status} -> {to_status}"
            " (the job is not in a state that allows it)"
        )


class CommandRejectedError(DomainError):
    """The current state does not allow this command; the message says why."""


class PriceTableError(DomainError, UsageError):
    """A price table or a server type that cannot be priced; the message names the key."""
