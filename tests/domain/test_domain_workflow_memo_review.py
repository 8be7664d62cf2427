"""workflow_from_mapping's cache of validated graphs: each caller gets its own graph, the
answer never depends on what was cached before, and memory stays bounded (found by review)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conjure_actors.domain import workflow as workflow_module
from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.workflow import graph_sha256, workflow_from_mapping


def _graph() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "a"}},
    }


@pytest.fixture(autouse=True)
def _cold_cache() -> None:
    workflow_module._VALID_GRAPHS.clear()


def test_a_graph_changed_through_one_workflow_does_not_change_the_next() -> None:
    """Each call gives its own graph (the docstring says a deep copy): a caller that
    changes the graph it got back changes nobody else's, and hashes stay true."""
    first = workflow_from_mapping(_graph())
    first.graph["2"]["inputs"]["filename_prefix"] = "changed"  # type: ignore[index]
    second = workflow_from_mapping(_graph())
    assert second.graph == _graph()
    assert second.sha256 == graph_sha256(second.graph)


def test_a_graph_rejected_cold_is_rejected_warm() -> None:
    """Validation does not depend on what was validated before: a tuple link (ComfyUI reads
    only a 2-item list as a link) is a problem even after the list form was seen."""
    bad = _graph()
    bad["2"]["inputs"]["images"] = ("1", 0)
    with pytest.raises(WorkflowError):
        workflow_from_mapping(bad)
    workflow_from_mapping(_graph())
    with pytest.raises(WorkflowError):
        workflow_from_mapping(bad)


def test_the_wrapped_graph_equals_a_deep_copy_of_the_given_one_when_warm() -> None:
    """test_workflow_from_mapping_equals_a_deep_copy's property, with a list-valued twin
    seen first (equal JSON, unequal Python values)."""
    lists = _graph()
    lists["1"]["inputs"]["extra"] = {"__value__": [1, 2]}
    tuples = copy.deepcopy(lists)
    tuples["1"]["inputs"]["extra"] = {"__value__": (1, 2)}
    workflow_from_mapping(lists)
    assert workflow_from_mapping(tuples).graph == copy.deepcopy(tuples)


def test_a_graph_over_64_kib_of_text_is_not_kept() -> None:
    """A graph carrying a large literal (a base64 image, say) is validated, not cached:
    the cache's memory is bounded by size, not only by count."""
    big = _graph()
    big["1"]["inputs"]["note"] = "A" * 100_000
    workflow_from_mapping(big)
    assert workflow_module._VALID_GRAPHS == {}


def test_a_reader_may_share_the_cached_graph() -> None:
    """``shared=True`` (a caller that only reads it) gets the cached graph itself on a hit;
    every other caller gets a copy of its own."""
    workflow_from_mapping(_graph())
    first = workflow_from_mapping(_graph(), shared=True)
    second = workflow_from_mapping(_graph(), shared=True)
    own = workflow_from_mapping(_graph())
    assert first.graph is second.graph
    assert own.graph is not first.graph
    assert own.graph == first.graph
