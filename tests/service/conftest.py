"""Fixtures of the job service tests (helpers live in ``service_helpers``)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from service_helpers import sdk, sim_config

__all__ = ["sdk", "sim_config"]


@pytest.fixture(autouse=True)
def _no_worker_threads_under_autojump(inline_worker_threads_under_autojump: None) -> None:
    """The in-memory service tests are about logic in mock time: their blocking work (an
    fsync, a JPEG encoding) runs inline under the autojump clock (tests/conftest.py says
    why)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (``browser_support``): skipped with
    one line where it is not installed, but failed under CI (``CI=true``), which must never
    silently not run the browser tests (``.ci/run`` installs it)."""
    from browser_support import CHROMIUM, CHROMIUM_ARGS

    if not os.access(CHROMIUM, os.X_OK):
        reason = (
            f"the browser tests need Debian's chromium at {CHROMIUM} (apt-get install chromium)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=list(CHROMIUM_ARGS)
        )
        try:
            yield chromium
        finally:
            chromium.close()
