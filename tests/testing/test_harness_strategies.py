"""The harness's hypothesis strategies draw what they promise."""

from __future__ import annotations

import json

import pytest
from hypothesis import find, given, settings

import conjure_actors.testing as testing
from conjure_actors.domain.workflow import catalog_from_object_info, load_workflow, validate_graph
from conjure_actors.errors import ConjureError
from conjure_actors.sim import PNG_SIGNATURE
from conjure_actors.sim.catalog import OBJECT_INFO, output_nodes
from conjure_actors.sim.comfyui_validate import validate_prompt
from conjure_actors.testing import (
    Knobs,
    budgets,
    catalog_workflows,
    fault_schedules,
    images,
    invalid_requests,
    valid_requests,
)

CATALOG = catalog_from_object_info(OBJECT_INFO)


@pytest.mark.slow
@given(catalog_workflows())
def test_catalog_workflows_validate_against_the_catalog(graph: dict) -> None:
    """Every drawn graph is valid for the simulator's node catalogue."""
    assert validate_graph(graph, CATALOG) == []
    assert json.loads(json.dumps(graph)) == graph


@given(catalog_workflows(classes=["EmptyImage", "ImageToMask", "MaskToImage", "PreviewImage"]))
def test_catalog_workflows_never_ask_an_rgb_image_for_its_alpha(graph: dict) -> None:
    """No executable class makes an image with an alpha channel, so ImageToMask is never
    drawn with "alpha" (ComfyUI fails such a prompt: the graph would not run)."""
    channels = {n["inputs"]["channel"] for n in graph.values() if n["class_type"] == "ImageToMask"}
    assert channels <= {"red", "green", "blue"}


def test_catalog_workflows_draw_classes_whose_choices_come_in_the_combo_form() -> None:
    """A choice input declared ``("COMBO", {"options": [...]})`` (ImageQuantize's dither,
    ImageBlend's blend_mode) is drawn from its options, so those classes are drawn at all."""
    classes = ["EmptyImage", "ImageQuantize", "PreviewImage"]
    graph = find(
        catalog_workflows(classes=classes),
        lambda g: any(n["class_type"] == "ImageQuantize" for n in g.values()),
    )
    options = OBJECT_INFO["ImageQuantize"]["input"]["required"]["dither"][1]["options"]
    quantize = [n for n in graph.values() if n["class_type"] == "ImageQuantize"]
    assert quantize
    assert all(n["inputs"]["dither"] in options for n in quantize)


@given(valid_requests())
def test_valid_requests_load(request: testing.JobRequest) -> None:
    """A valid request's workflow loads and expects to run."""
    assert request.expect == "valid"
    load_workflow(dict(request.workflow))


@given(invalid_requests())
def test_invalid_requests_are_refused_or_well_formed(request: testing.JobRequest) -> None:
    """``refused`` graphs fail to load; ``rejected`` ones load (the server rejects them)."""
    if request.expect == "refused":
        with pytest.raises(ConjureError):
            load_workflow(dict(request.workflow))
    else:
        assert request.expect == "rejected"
        load_workflow(dict(request.workflow))
        outcome = validate_prompt(
            json.loads(json.dumps(request.workflow)),
            catalog=OBJECT_INFO,
            output_classes=output_nodes(),
            custom={"LoadImage": lambda name, value: True},
        )
        assert not outcome.ok, request.name


@given(images())
def test_images_are_pngs(data: bytes) -> None:
    """Input images are real PNG files."""
    assert data.startswith(PNG_SIGNATURE)


@pytest.mark.slow
@given(fault_schedules())
def test_fault_schedules_are_sorted_in_time(schedule: list) -> None:
    """Scheduled faults come in time order, within the horizon."""
    times = [t.after for t in schedule]
    assert times == sorted(times)
    assert all(0 <= t <= 900 for t in times)


@settings(max_examples=10)
@given(budgets())
def test_budgets_are_whole_cents(usd: float | None) -> None:
    """Budgets are None or whole cents up to $5."""
    if usd is not None:
        assert 0 <= usd <= 5
        assert round(usd * 100) == pytest.approx(usd * 100)


def test_knobs_repr_shows_only_what_is_set() -> None:
    """A fault's repr names only the knobs it turns (readable shrunk steps)."""
    knobs = Knobs(runcomfy=testing.RunComfyFaults(server_error_rate=0.1))
    assert repr(knobs) == (
        "Knobs(runcomfy=RunComfyFaults(server_error_rate=0.1), comfyui=ComfyFaults())"
    )


def test_public_names() -> None:
    """``conjure_actors.testing`` exports exactly its documented names."""
    assert sorted(testing.__all__) == testing.__all__
    for name in testing.__all__:
        assert hasattr(testing, name), name
    assert {"SimulatedCloud", "Harness", "ConjureStateMachine", "run_harness"} <= set(
        testing.__all__
    )
