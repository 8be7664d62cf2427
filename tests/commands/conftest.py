"""Fixtures of the command tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No RUNCOMFY_* or CONJURE_* setting leaks in from the shell; cwd is the test's dir."""
    for name in list(os.environ):
        if name.startswith(("RUNCOMFY_", "CONJURE_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
