"""Hypothesis settings for the harness's stateful tests: ``ci`` (fast) and ``fuzz`` (long).

- ``ci``: 40 examples of up to 30 steps, derandomized (the same examples every run: CI does not
  flake; exploring is ``fuzz``'s job), no example database: well under 90 s on two cores
  for :class:`~conjure_actors.testing.ConjureStateMachine`.
- ``fuzz`` (``just fuzz``, i.e. ``HYPOTHESIS_PROFILE=fuzz``): thousands of longer examples,
  with the example database kept in ``.hypothesis/examples`` between runs, so a failure
  found once is replayed first next time.

:func:`stateful_settings` picks one from ``$HYPOTHESIS_PROFILE`` (anything but ``fuzz``
means ``ci``). They are also registered as hypothesis profiles ``harness-ci`` and
``harness-fuzz``.
"""

from __future__ import annotations

import os
from typing import Final

from hypothesis import HealthCheck, settings
from hypothesis.database import DirectoryBasedExampleDatabase

__all__ = ["DATABASE_DIR", "stateful_settings"]

DATABASE_DIR: Final = ".hypothesis/examples"

_SLOW_OK: Final = [HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much]

settings.register_profile(
    "harness-ci",
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)
settings.register_profile(
    "harness-fuzz",
    max_examples=3000,
    stateful_step_count=60,
    deadline=None,
    database=DirectoryBasedExampleDatabase(DATABASE_DIR),
    suppress_health_check=_SLOW_OK,
    print_blob=True,
)


def stateful_settings(profile: str | None = None) -> settings:
    """The settings for a harness state machine under ``profile`` (default: from
    ``$HYPOTHESIS_PROFILE``: ``fuzz`` -> ``harness-fuzz``, else ``harness-ci``)."""
    name = profile or os.environ.get("HYPOTHESIS_PROFILE", "ci")
    return settings.get_profile("harness-fuzz" if name == "fuzz" else "harness-ci")
