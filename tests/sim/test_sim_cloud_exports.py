"""The sim package re-exports exactly its public names."""

from __future__ import annotations

import subprocess
import sys

import pytest

import conjure_actors.sim as sim


def test_every_exported_name_resolves() -> None:
    """Every name in sim.__all__ is importable from the package, and the list is sorted."""
    for name in sim.__all__:
        assert getattr(sim, name) is not None, name
    assert sim.__all__ == sorted(sim.__all__, key=lambda n: (not n.isupper(), n))


@pytest.mark.slow  # a subprocess: not in the inner loop (just test)
def test_import_does_not_load_hypercorn() -> None:
    """`import conjure_actors.sim` leaves hypercorn (loopback serving) unloaded until used."""
    code = "import sys, conjure_actors.sim; print('hypercorn' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "False"
