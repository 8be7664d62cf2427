"""The root of every error conjure_actors raises on purpose.

Each layer defines its errors in its own ``errors.py`` as subclasses of these::

    ConjureError
    ├── UsageError                 bad input from the user (flags, files, config): exit 2
    │   └── ConfigError            a bad key or value in the config (names the key)
    ├── domain.errors.DomainError
    │   ├── WorkflowError          a workflow graph that cannot run (lists every problem)
    │   └── IllegalTransitionError a job asked to move from one status to another illegally
    ├── runtime.errors.ActorError  mailbox full, ask timeout, actor stopped, escalation
    ├── clients.errors.ClientError talking to ComfyUI or RunComfy failed
    └── BudgetError                a launch would cross the budget

Messages are one line a user can act on. They never carry an API token or a machine URL.
"""

from __future__ import annotations


class ConjureError(Exception):
    """Root of the errors this package raises on purpose."""


class UsageError(ConjureError):
    """The user gave us something we cannot use; the message says what to do instead."""


class ConfigError(UsageError):
    """A configuration key or value is wrong; the message names the key."""


class BudgetError(ConjureError):
    """A launch (or a job) would cross the budget the user set."""
