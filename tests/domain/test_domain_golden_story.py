"""The golden-log generators still tell the stories their checked-in logs hold.

A golden log is never regenerated, and its bytes carry a per-file header, so the guard is on
the events: each generator's story, decided with today's domain functions, decodes equal to
the log written when that generation was new.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

import eventlog
from conjure_actors.domain.events import Event

DATA = Path(__file__).resolve().parent.parent / "data"
GENERATORS = {
    "make_golden.py": "golden_v1.log",
    "make_golden_v2_jobs.py": "golden_v2_jobs.log",
    "make_golden_v3_service.py": "golden_v3_service.log",
    "make_golden_v9_retention.py": "golden_v9_retention.log",
    "make_golden_v13_outputs_not_stored.py": "golden_v13_outputs_not_stored.log",
}


@pytest.mark.parametrize(("script", "log"), sorted(GENERATORS.items()))
def test_generator_story_is_the_checked_in_log(script: str, log: str) -> None:
    """The generator's events equal the golden log's, one for one and in order."""
    spec = importlib.util.spec_from_file_location(script.removesuffix(".py"), DATA / script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    recorded = [record.event for record in eventlog.read(DATA / log, Event)]
    assert module.story() == recorded
