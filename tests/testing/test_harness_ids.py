"""The harness makes ids deterministic by injecting an id factory, not by patching uuid."""

from __future__ import annotations

import uuid

import trio
import trio.testing

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.domain import events as ev
from conjure_actors.testing import HarnessSettings, JobRequest, conjure_workflow, open_harness
from conjure_actors.testing.harness import seeded_ids


def _conjure_job() -> JobRequest:
    return JobRequest(
        conjure_workflow(), name="conjure", image=example_sketch_png(), prompt="a fox", seed=1
    )


def test_seeded_ids_repeat_for_a_seed_and_differ_across_seeds() -> None:
    """Two factories with one seed make the same version-4 ids; another seed, other ids."""
    first, again, other = seeded_ids(3), seeded_ids(3), seeded_ids(4)
    ids = [first() for _ in range(5)]
    assert ids == [again() for _ in range(5)]
    assert all(i.version == 4 for i in ids)
    assert not set(ids) & {other() for _ in range(5)}


async def test_harness_run_leaves_uuid4_alone(mock_clock: trio.testing.MockClock) -> None:
    """During a harness run ``uuid.uuid4`` is the library's own; the log's prompt ids come
    from the harness's seeded factory."""
    original = uuid.uuid4
    async with open_harness(HarnessSettings(seed=8)) as h:
        assert uuid.uuid4 is original
        await h.submit(_conjure_job())
        assert await h.run_until_quiet()
        assert uuid.uuid4 is original
        records = list(h.log.records())
    expected = seeded_ids(8)
    made = {str(expected()) for _ in range(200)}
    prompts = [r.event for r in records if isinstance(r.event, ev.PromptSubmitting)]
    assert prompts
    assert all(p.prompt_id in made for p in prompts)
