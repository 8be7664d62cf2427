"""Fixtures of the job service tests (helpers live in ``service_helpers``)."""

import pytest
from service_helpers import sdk, sim_config

__all__ = ["sdk", "sim_config"]


@pytest.fixture(autouse=True)
def _no_worker_threads_under_autojump(inline_worker_threads_under_autojump: None) -> None:
    """The in-memory service tests are about logic in mock time: their blocking work (an
    fsync, a JPEG encoding) runs inline under the autojump clock (tests/conftest.py says
    why)."""
