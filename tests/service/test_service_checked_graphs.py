"""A submission's graph is validated against the service's catalogue once per distinct graph
(``checked_workflow``): the same graph again reuses the validated Workflow, a refused graph
is refused every time, a new catalogue validates again, and the memory is bounded."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as hs

import conjure_actors.service.v2_jobs as v2_jobs
from conjure_actors.domain.workflow import catalog_from_object_info, validate_graph
from conjure_actors.service.errors import ApiError
from conjure_actors.sim.catalog import object_info

WORKFLOWS = Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows"
GRAPH = json.loads((WORKFLOWS / "invert_save.json").read_text())
CATALOG = catalog_from_object_info(object_info(()))


def _service(catalog: Any = CATALOG) -> Any:
    """What checked_workflow reads of a Service: its catalogue and its memory."""
    return SimpleNamespace(catalog=catalog, checked_graphs={})


def _counting(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls: list[int] = []
    validate = v2_jobs.validate_graph

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return validate(*args, **kwargs)

    monkeypatch.setattr(v2_jobs, "validate_graph", counted)
    return calls


def _with_seed(seed: int) -> dict[str, Any]:
    graph = json.loads(json.dumps(GRAPH))
    first = next(iter(graph.values()))
    first.setdefault("inputs", {})["seed_tag"] = seed  # a distinct graph per seed
    return graph


def test_the_same_graph_is_validated_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two submissions of an equal graph (a fresh dict each): one validation, one Workflow."""
    calls = _counting(monkeypatch)
    service = _service()
    first = v2_jobs.checked_workflow(service, json.loads(json.dumps(GRAPH)))
    second = v2_jobs.checked_workflow(service, json.loads(json.dumps(GRAPH)))
    assert second is first
    assert calls == [1]


def test_a_refused_graph_is_refused_every_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph with a problem raises 422 each time and is never remembered."""
    calls = _counting(monkeypatch)
    service = _service()
    bad = {"1": {"class_type": "NoSuchNode", "inputs": {}}}
    for _ in range(2):
        with pytest.raises(ApiError) as caught:
            v2_jobs.checked_workflow(service, bad)
        assert caught.value.code == "invalid_workflow"
    assert calls == [1, 1]
    assert service.checked_graphs == {}


def test_a_new_catalogue_validates_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph validated under one catalogue is validated again under another (RunComfy's
    catalogue is learned after start)."""
    calls = _counting(monkeypatch)
    service = _service(catalog=None)
    v2_jobs.checked_workflow(service, GRAPH)
    service.catalog = CATALOG
    v2_jobs.checked_workflow(service, GRAPH)
    assert calls == [1, 1]


def test_the_memory_keeps_the_newest_graphs_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past CHECKED_GRAPHS distinct graphs, the oldest is forgotten (validated again)."""
    monkeypatch.setattr(v2_jobs, "CHECKED_GRAPHS", 3)
    service = _service()
    for seed in range(5):
        v2_jobs.checked_workflow(service, _with_seed(seed))
    assert len(service.checked_graphs) == 3
    calls = _counting(monkeypatch)
    v2_jobs.checked_workflow(service, _with_seed(4))
    v2_jobs.checked_workflow(service, _with_seed(0))
    assert calls == [1]


def test_a_large_graph_is_not_remembered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A graph whose encoding is past CHECKED_GRAPH_BYTES is validated every time."""
    monkeypatch.setattr(v2_jobs, "CHECKED_GRAPH_BYTES", 16)
    service = _service()
    v2_jobs.checked_workflow(service, GRAPH)
    assert service.checked_graphs == {}


_JSON = hs.recursive(
    hs.none() | hs.booleans() | hs.integers() | hs.floats(allow_nan=False) | hs.text(max_size=5),
    lambda inner: hs.lists(inner, max_size=3) | hs.dictionaries(hs.text(max_size=3), inner),
    max_leaves=8,
)


@given(
    hs.dictionaries(
        hs.sampled_from(["1", "2", "3"]),
        hs.fixed_dictionaries(
            {
                "class_type": hs.sampled_from(["EmptyImage", "ImageInvert", "SaveImage", "X"]),
                "inputs": hs.dictionaries(hs.sampled_from(["image", "width", "a"]), _JSON),
            }
        ),
        max_size=3,
    ),
    hs.lists(hs.integers(0, 2), max_size=4),
)
@pytest.mark.slow
def test_the_answer_is_the_fresh_validations(graph: dict[str, Any], order: list[int]) -> None:
    """Whatever was checked before, a graph is accepted exactly when validate_graph finds
    no problem in it (remembered answers never differ from a fresh one)."""
    service = _service()
    earlier = [_with_seed(i) for i in order]
    for g in [*earlier, graph]:
        refused = bool(validate_graph(g, CATALOG, strict=True))
        try:
            workflow = v2_jobs.checked_workflow(service, g)
        except ApiError:
            assert refused
        else:
            assert not refused
            assert workflow.graph == g
