"""Workflow graphs: validation (every problem at once), bindings, outputs, roles, hashing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.workflow import (
    NodeSpec,
    apply_bindings,
    bindings_for,
    catalog_from_object_info,
    conjure_roles,
    graph_sha256,
    load_workflow,
    node_sort_key,
    output_nodes,
    parse_set,
    parse_value,
    seed_inputs,
    unwrap_prompt,
    validate_bindings,
    validate_graph,
    workflow_from_mapping,
)

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "conjure_actors" / "workflows").glob("*.json"))
CAPTURES = Path(__file__).resolve().parents[1] / "data" / "captures"
CONJURE = ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json"


def invert() -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 64, "height": 64}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_bundled_workflows_are_valid(path: Path) -> None:
    """Every bundled workflow (CONJURE and the captured model-free ones) validates."""
    workflow = load_workflow(path)
    assert workflow.outputs()


def test_conjure_roles_are_found_by_title() -> None:
    """INPUTIMAGE=16, POSITIVECLIP=34, EXPORT IMAGE=24, EXPORTGLB=33."""
    roles = load_workflow(CONJURE).roles()
    assert (roles.input_image, roles.prompt, roles.depth_image, roles.mesh) == (
        "16",
        "34",
        "24",
        "33",
    )


def test_roles_fall_back_to_classes_without_titles() -> None:
    """Without titles, the first LoadImage / encoder / SaveImage / SaveGLB are used."""
    graph = {
        "5": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "x", "clip": ["5", 0]}},
        "9": {"class_type": "SaveImage", "inputs": {"images": ["5", 0]}},
    }
    roles = conjure_roles(graph)
    assert (roles.input_image, roles.prompt, roles.depth_image, roles.mesh) == ("5", "7", "9", None)


def test_every_problem_is_reported_at_once() -> None:
    """Missing class, missing link target, bad index, bad value and no output: all listed."""
    graph = {
        "1": {"inputs": {}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": ["9", 0]}},
        "3": {"class_type": "ImageInvert", "inputs": {"image": ["2", "x"]}},
        "4": {"class_type": "ImageInvert", "inputs": {"image": [1, 2, 3], "other": None}},
    }
    problems = validate_graph(graph)
    assert any("node 1: missing class_type" in p for p in problems)
    assert any("node 2 input 'image': link to missing node '9'" in p for p in problems)
    assert any("node 3 input 'image': bad output index 'x'" in p for p in problems)
    assert any("node 4 input 'image': a list of 3 items" in p for p in problems)
    assert any(
        "node 4 input 'other'" in p and "neither a literal nor a link" in p for p in problems
    )
    assert any("no output node" in p for p in problems)


def test_cycle_is_reported_with_its_path() -> None:
    """A cycle names the link that closes it and the nodes on it."""
    graph = invert()
    graph["1"]["inputs"]["width"] = ["2", 0]
    problems = validate_graph(graph)
    assert problems == ["node 2 input 'image': link to node 1 closes a cycle (1 -> 2 -> 1)"]


def test_ui_format_export_gets_the_save_api_hint() -> None:
    """A UI-format export is recognised and the user is told to use Save (API)."""
    problems = validate_graph({"nodes": [], "links": [], "version": 0.4})
    assert len(problems) == 1
    assert "Save (API)" in problems[0]


def test_workflow_error_message_is_one_line_listing_all() -> None:
    """The exception is one line, naming the file and joining every problem."""
    with pytest.raises(WorkflowError) as info:
        workflow_from_mapping({"1": {"inputs": {}}}, name="bad.json")
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("bad.json: workflow has 2 problems")
    assert len(info.value.problems) == 2


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    """A file that is not JSON says where it broke."""
    path = tmp_path / "w.json"
    path.write_text('{"1": ')
    with pytest.raises(WorkflowError, match="line 1"):
        load_workflow(path)


def test_missing_file_is_a_workflow_error(tmp_path: Path) -> None:
    """A missing file is a one-line error, not a traceback."""
    with pytest.raises(WorkflowError, match="file not found"):
        load_workflow(tmp_path / "nope.json")


def test_catalog_checks_output_index_types_and_required_inputs() -> None:
    """With /object_info: index beyond the outputs, type mismatch, required input missing."""
    info = json.loads((CAPTURES / "object_info_LoadImage.json").read_text())["body"]
    info |= json.loads((CAPTURES / "object_info_SaveImage.json").read_text())["body"]
    info |= json.loads((CAPTURES / "object_info_EmptyImage.json").read_text())["body"]
    catalog = catalog_from_object_info(info)
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 5]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["1", 1], "filename_prefix": "p"}},
        "4": {"class_type": "Mystery", "inputs": {}},
    }
    problems = validate_graph(graph, catalog)
    assert any("node 2 input 'images': bad output index 5" in p for p in problems)
    assert any(
        "node 2 (SaveImage) input 'filename_prefix': required input missing" in p for p in problems
    )
    assert any(
        "node 3 input 'images': expects IMAGE but node 1 output 1 is MASK" in p for p in problems
    )
    assert any("node 4: unknown class 'Mystery'" in p for p in problems)
    lenient = validate_graph(graph, catalog, strict=False)
    assert not any("Mystery" in p for p in lenient)


def test_node_spec_from_object_info_reads_outputs_and_output_node() -> None:
    """NodeSpec reads required inputs, output types and output_node."""
    info = json.loads((CAPTURES / "object_info_SaveImage.json").read_text())["body"]["SaveImage"]
    spec = NodeSpec.from_object_info("SaveImage", info)
    assert spec.required == ("images", "filename_prefix")
    assert spec.output_node
    assert spec.outputs == ()


def test_output_nodes_fall_back_to_the_builtin_list() -> None:
    """Without a catalog, SaveImage and friends are output nodes."""
    assert output_nodes(invert()) == ["3"]


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("true", True),
        ("20", 20),
        ("0.5", 0.5),
        ('"x"', "x"),
        ("hello", "hello"),
        ("[1, 2]", [1, 2]),
    ],
)
def test_set_values_parse_as_json_else_string(text: str, value: Any) -> None:
    """--set values keep JSON types; anything else is a string."""
    assert parse_value(text) == value


def test_parse_set_splits_node_and_input() -> None:
    """NODE.INPUT=VALUE: node id, input name and the value; malformed is an error."""
    assert parse_set("20.steps=30") == ("20.steps", 30)
    with pytest.raises(WorkflowError, match=r"NODE\.INPUT=VALUE"):
        parse_set("steps=30")


def test_bindings_put_image_prompt_and_seed_where_they_belong() -> None:
    """Image into LoadImage, prompt into clip_l and t5xxl, seed into both samplers."""
    bindings = bindings_for(load_workflow(CONJURE), image="up.png", prompt="a fox", seed=7)
    assert bindings == {
        "16.image": '"up.png"',
        "34.clip_l": '"a fox"',
        "34.t5xxl": '"a fox"',
        "20.seed": "7",
        "44.seed": "7",
    }


def test_binding_to_missing_node_or_input_is_an_error() -> None:
    """Both problems are reported together."""
    with pytest.raises(WorkflowError) as info:
        bindings_for(load_workflow(CONJURE), sets=["99.x=1", "20.nope=2"])
    assert len(info.value.problems) == 2
    assert "no node '99'" in info.value.problems[1] or "no node '99'" in info.value.problems[0]


def test_prompt_without_text_encoder_is_an_error() -> None:
    """--prompt on a graph with no text encoder says so."""
    with pytest.raises(WorkflowError, match="no text-encode node"):
        bindings_for(workflow_from_mapping(invert()), prompt="x")


def test_apply_bindings_injects_values_without_touching_the_original() -> None:
    """The prompt body has the values; the registered graph is unchanged."""
    graph = invert()
    prompt = apply_bindings(graph, {"1.width": "128", "3.filename_prefix": '"out/y"'})
    assert prompt["1"]["inputs"]["width"] == 128
    assert prompt["3"]["inputs"]["filename_prefix"] == "out/y"
    assert graph["1"]["inputs"]["width"] == 64


def test_seed_inputs_lists_literal_seeds() -> None:
    """Both KSampler seeds of the CONJURE workflow are found."""
    assert seed_inputs(load_workflow(CONJURE).graph) == [("20", "seed"), ("44", "seed")]


@given(st.permutations(["1", "2", "3"]))
def test_sha256_ignores_key_order(order: list[str]) -> None:
    """The canonical hash depends on content, not on the JSON layout."""
    graph = invert()
    shuffled = {k: graph[k] for k in order}
    assert graph_sha256(shuffled) == graph_sha256(graph)


def test_sha256_changes_with_content() -> None:
    """A changed input changes the hash."""
    other = invert()
    other["1"]["inputs"]["width"] = 65
    assert graph_sha256(other) != graph_sha256(invert())


JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=False)
    | st.text(max_size=3),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=12,
)
NODE_IDS = st.sampled_from(["1", "2", "3"])
NODE = st.fixed_dictionaries(
    {},
    optional={
        "class_type": st.sampled_from(["SaveImage", "ImageInvert", "LoadImage"]) | JSON,
        "inputs": st.dictionaries(
            st.sampled_from(["image", "images", "x"]),
            st.tuples(NODE_IDS, st.integers(-1, 2)).map(list) | JSON,
            max_size=3,
        )
        | JSON,
    },
)


@given(st.dictionaries(NODE_IDS, NODE | JSON, max_size=3) | JSON)
def test_validate_never_raises_on_any_json(graph: Any) -> None:
    """Validation is total: any JSON value gives a list of one-line problems."""
    problems = validate_graph(graph)
    assert all(isinstance(p, str) and "\n" not in p for p in problems)


@given(st.dictionaries(NODE_IDS, NODE, min_size=1, max_size=3))
def test_node_problems_name_their_node(graph: dict[str, Any]) -> None:
    """Every problem names a node id, except the graph-wide 'no output node'."""
    for problem in validate_graph(graph):
        assert problem.startswith("node ") or "no output node" in problem


# ----------------------------------------------------- issue 17: every problem is one line

_TEXT = st.text(
    alphabet=st.characters(codec="utf-8", categories=("L", "N", "P", "S", "Z", "C")), max_size=6
)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=8,
)
_NODE = st.fixed_dictionaries(
    {"class_type": _TEXT | st.sampled_from(["SaveImage", "LoadImage", "KSampler"])},
    optional={
        "inputs": st.dictionaries(
            _TEXT, _JSON | st.tuples(_TEXT, st.integers(-2, 3)).map(list), max_size=4
        ),
        "_meta": st.fixed_dictionaries({"title": _TEXT}),
    },
)
_GRAPH = st.dictionaries(_TEXT, _NODE | _JSON, max_size=6)


def test_newline_node_id_gives_one_line_problems() -> None:
    """validate_graph({'\\n': None}) (issue 17): the id is quoted, the problem is one line."""
    problems = validate_graph({"\n": None})
    assert problems[0] == "node '\\n': is not an object with class_type and inputs"
    assert all(len(p.splitlines()) == 1 for p in problems)


@pytest.mark.slow
@given(_GRAPH, st.booleans())
def test_every_problem_of_any_graph_is_one_line(graph: dict[str, Any], strict: bool) -> None:
    """Whatever ids, classes, names and values a graph holds, each problem is one line."""
    catalog = catalog_from_object_info(
        json.loads(
            (ROOT / "tests" / "data" / "captures" / "object_info_SaveImage.json").read_text()
        ).get("body", {})
    )
    for problems in (validate_graph(graph), validate_graph(graph, catalog, strict=strict)):
        for problem in problems:
            assert problem.splitlines() == [problem], problem


@given(_GRAPH, st.dictionaries(_TEXT, _TEXT, max_size=3))
def test_every_binding_problem_is_one_line(graph: dict[str, Any], sets: dict[str, str]) -> None:
    """Bindings with control characters in their keys give one-line problems too."""
    bindings = {key: json.dumps(value) for key, value in sets.items()}
    for problem in validate_bindings(graph, bindings):
        assert problem.splitlines() == [problem], problem


def test_node_sort_key_is_total_on_digits_int_refuses() -> None:
    """A superscript digit is a digit that int() refuses: it sorts as a name, no crash."""
    assert sorted(["²", "10", "2"], key=node_sort_key) == ["2", "10", "²"]


# ------------------------------------------------------------- {"prompt": {...}} bodies


def test_prompt_body_loads_as_a_workflow(tmp_path: Path) -> None:
    """A ``{"prompt": graph, "client_id": ...}`` file (ComfyUI's API examples) loads."""
    graph = json.loads((ROOT / "conjure_actors" / "workflows" / "invert_save.json").read_text())
    path = tmp_path / "body.json"
    path.write_text(json.dumps({"prompt": graph, "client_id": "abc"}))
    assert load_workflow(path).graph == graph


def test_a_node_called_prompt_stays_a_graph() -> None:
    """A graph whose node id is ``prompt`` is not mistaken for a body."""
    graph = {"prompt": {"class_type": "SaveImage", "inputs": {"images": ["x", 0]}}}
    assert unwrap_prompt(graph) is graph
