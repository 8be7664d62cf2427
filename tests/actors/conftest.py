"""Fixtures for the actor tests (their helpers are in ``actor_support``)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_worker_threads_under_autojump(inline_worker_threads_under_autojump: None) -> None:
    """Actor tests are about the actors' logic in mock time: their blocking file work runs
    inline under the autojump clock (tests/conftest.py says why)."""
