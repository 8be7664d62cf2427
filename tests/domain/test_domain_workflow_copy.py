"""Workflow copies: ``apply_bindings`` is copy-on-write and ``workflow_from_mapping`` copies
JSON without ``copy.deepcopy``; both equal the deepcopy-based versions they replaced
(kept here as the oracles) and never change the graph they are given."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.workflow import (
    apply_bindings,
    bindings_for,
    load_workflow,
    workflow_from_mapping,
    workflow_from_text,
)

# A long property suite: out of the inner loop (just test), run by just check and CI.
pytestmark = pytest.mark.slow

CONJURE = (
    Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows" / "conjure_flux_mesh.json"
)


def deepcopy_apply_bindings(
    graph: Mapping[str, Any], bindings: Mapping[str, str]
) -> dict[str, Any]:
    """The oracle: ``apply_bindings`` as it was, binding a deep copy of the whole graph."""
    prompt: dict[str, Any] = copy.deepcopy(dict(graph))
    for key, text in bindings.items():
        node_id, _, name = key.rpartition(".")
        node = prompt[node_id]
        inputs = node.setdefault("inputs", {})
        inputs[name] = json.loads(text)
    return prompt


scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.sampled_from(["image", "text", "seed", "steps", "width", ""])
"""Input names, for the graph and for bindings (a binding splits at its last dot)."""


@st.composite
def graphs(draw: st.DrawFn, *, tuples: bool = False) -> dict[str, Any]:
    """A valid API-format graph: literal and ``__value__`` inputs, links to earlier nodes
    (acyclic), a SaveImage last; ``tuples``: ``__value__`` may also hold tuples (not JSON,
    deep-copied as they are)."""
    count = draw(st.integers(1, 6))
    wrapped = json_values | st.tuples(json_values, json_values) if tuples else json_values
    graph: dict[str, Any] = {}
    for i in range(1, count + 1):
        literal = scalars.filter(lambda v: v is not None) | st.builds(
            lambda v: {"__value__": v}, wrapped
        )
        links = st.builds(lambda j: [str(j), 0], st.integers(1, i - 1)) if i > 1 else st.nothing()
        inputs = draw(st.dictionaries(names, literal | links, max_size=4))
        node: dict[str, Any] = {
            "class_type": "SaveImage" if i == count else draw(st.text(min_size=1, max_size=6))
        }
        keep_empty = draw(st.booleans())
        if inputs or keep_empty:
            node["inputs"] = inputs
        if draw(st.booleans()):
            node["_meta"] = {"title": draw(st.text(max_size=6))}
        graph[str(i)] = node
    return graph


@st.composite
def graphs_and_bindings(draw: st.DrawFn) -> tuple[dict[str, Any], dict[str, str]]:
    """A graph and bindings on its nodes (existing or new inputs, several per node, any JSON)."""
    graph = draw(graphs())
    keys = st.builds(lambda nid, name: f"{nid}.{name}", st.sampled_from(sorted(graph)), names)
    bindings = draw(st.dictionaries(keys, json_values.map(json.dumps), max_size=5))
    return graph, bindings


def containers(value: Any) -> Iterator[Any]:
    """Every dict and list inside ``value`` (itself included)."""
    if isinstance(value, dict):
        yield value
        for item in value.values():
            yield from containers(item)
    elif isinstance(value, list | tuple):
        if isinstance(value, list):
            yield value
        for item in value:
            yield from containers(item)


@given(graphs_and_bindings())
def test_apply_bindings_equals_binding_a_deep_copy(
    case: tuple[dict[str, Any], dict[str, str]],
) -> None:
    """For any graph and bindings, the prompt equals the deepcopy-based one."""
    graph, bindings = case
    assert apply_bindings(graph, bindings) == deepcopy_apply_bindings(graph, bindings)


@given(graphs_and_bindings())
def test_apply_bindings_never_changes_its_graph(
    case: tuple[dict[str, Any], dict[str, str]],
) -> None:
    """The graph given is equal, after, to a deep copy taken before."""
    graph, bindings = case
    before = copy.deepcopy(graph)
    apply_bindings(graph, bindings)
    assert graph == before


@given(graphs_and_bindings())
def test_apply_bindings_copies_only_the_bound_nodes(
    case: tuple[dict[str, Any], dict[str, str]],
) -> None:
    """A bound node and its inputs are new objects; every other node is shared."""
    graph, bindings = case
    prompt = apply_bindings(graph, bindings)
    bound = {key.rpartition(".")[0] for key in bindings}
    assert prompt is not graph
    for nid, node in prompt.items():
        if nid in bound:
            assert node is not graph[nid]
            assert node["inputs"] is not graph[nid].get("inputs")
        else:
            assert node is graph[nid]


def test_apply_bindings_on_the_conjure_workflow_equals_the_deep_copy() -> None:
    """A job's real bindings (image, prompt, seed, --set) on CONJURE: same prompt, graph intact."""
    workflow = load_workflow(CONJURE)
    bindings = bindings_for(
        workflow, image="in.png", prompt="a chair", seed=7, sets=["20.steps=30"]
    )
    before = copy.deepcopy(dict(workflow.graph))
    assert apply_bindings(workflow.graph, bindings) == deepcopy_apply_bindings(before, bindings)
    assert workflow.graph == before


@given(graphs(tuples=True))
def test_workflow_from_mapping_equals_a_deep_copy(graph: dict[str, Any]) -> None:
    """The wrapped graph equals ``copy.deepcopy`` of the one given (tuples and all)."""
    assert workflow_from_mapping(graph).graph == copy.deepcopy(graph)


@given(graphs(tuples=True))
def test_workflow_from_mapping_shares_nothing_mutable(graph: dict[str, Any]) -> None:
    """No dict or list of the caller's graph is in the workflow (the caller may change its
    own afterwards); the caller's graph is left as it was."""
    before = copy.deepcopy(graph)
    wrapped = workflow_from_mapping(graph).graph
    theirs = {id(c) for c in containers(graph)}
    assert not [c for c in containers(wrapped) if id(c) in theirs]
    assert graph == before


@given(graphs())
def test_workflow_from_text_equals_from_mapping(graph: dict[str, Any]) -> None:
    """Parsing JSON text (wrapped without a second copy) gives the same graph as the mapping."""
    text = json.dumps(graph)
    assert workflow_from_text(text).graph == workflow_from_mapping(json.loads(text)).graph
