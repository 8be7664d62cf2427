"""Work done once per workflow, not per job (issue 16): ``workflow_from_mapping`` remembers
graphs that validated (by canonical JSON), a ``Workflow`` its hash and roles, and
``bindings_for`` re-validates the bound graph only when a bound value can change the
answer. Each gives what the full work gave."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.workflow import (
    Workflow,
    apply_bindings,
    bindings_for,
    conjure_roles,
    graph_sha256,
    validate_graph,
    workflow_from_mapping,
)

CONJURE = (
    Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows" / "conjure_flux_mesh.json"
)


def conjure_graph() -> dict[str, Any]:
    graph: dict[str, Any] = json.loads(CONJURE.read_text())
    return graph


def test_same_mapping_twice_gives_equal_workflows_not_the_callers_dict() -> None:
    """A remembered graph: equal to the first, hashed alike, and not the caller's dict."""
    mine = conjure_graph()
    first = workflow_from_mapping(mine, name="a")
    second = workflow_from_mapping(mine, name="b")
    assert second.graph == first.graph == mine
    assert second.sha256 == first.sha256 == graph_sha256(mine)
    assert second.name == "b"
    assert second.roles() == conjure_roles(mine)
    mine["24"]["inputs"]["filename_prefix"] = "changed afterwards"
    assert second.graph != mine
    assert workflow_from_mapping(mine).graph == mine


def test_an_invalid_mapping_fails_every_time() -> None:
    """Nothing is remembered of a graph with problems: each call lists them."""
    bad = conjure_graph()
    bad["24"]["inputs"]["images"] = ["999", 0]
    for _ in range(2):
        with pytest.raises(WorkflowError, match="missing node '999'"):
            workflow_from_mapping(bad)


def test_a_workflow_hash_is_the_graphs() -> None:
    """``Workflow.sha256`` (computed once) is the graph's canonical hash."""
    wf = Workflow(conjure_graph())
    assert wf.sha256 == graph_sha256(wf.graph) == wf.sha256


VALUES = st.one_of(
    st.integers(-5, 5),
    st.text(max_size=4),
    st.booleans(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.none(),
    st.sampled_from([["21", 0], ["999", 0], ["21", -1], [1, 2, 3], {"__value__": 1}, {"a": 1}]),
)


@settings(max_examples=60, deadline=None)
@given(
    node=st.sampled_from(["24", "21", "20", "nope"]),
    name=st.sampled_from(["images", "seed", "steps", "filename_prefix"]),
    value=VALUES,
    fresh=st.booleans(),
)
def test_bindings_for_answers_as_a_full_validation(
    node: str, name: str, value: Any, fresh: bool
) -> None:
    """Bindings are accepted exactly when the bound graph has no problem (validated in
    full), whether the workflow came remembered or was built fresh."""
    graph = conjure_graph()
    wf = Workflow(graph) if fresh else workflow_from_mapping(graph)
    text = f"{node}.{name}={json.dumps(value)}"
    try:
        bound = bindings_for(wf, sets=[text])
    except WorkflowError:
        accepted = False
    else:
        accepted = True
        assert not validate_graph(apply_bindings(graph, bound))
    if not accepted and node in graph and name in graph[node]["inputs"]:
        encoded = {f"{node}.{name}": json.dumps(value)}
        assert validate_graph(apply_bindings(graph, encoded))
