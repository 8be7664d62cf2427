"""Pre-flight (issue 14): values against their input's type and range, seeds, the image."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from conjure_actors.actors.example import example_sketch_png
from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.preflight import (
    MAX_SEED,
    ImageInfo,
    InputError,
    check_image,
    check_seed,
    check_value,
    check_values,
    image_info,
    output_types,
    preflight,
)
from conjure_actors.domain.workflow import (
    InputConfig,
    catalog_from_object_info,
    workflow_from_mapping,
)
from conjure_actors.sim.catalog import OBJECT_INFO

ROOT = Path(__file__).resolve().parents[2]
UNIDENTIFIED = (
    "not an image ComfyUI's LoadImage reads (PNG, JPEG, WebP, GIF, BMP, TIFF...),"
    " or one cut short or damaged"
)
CATALOG = catalog_from_object_info(OBJECT_INFO)
CONJURE = workflow_from_mapping(
    json.loads((ROOT / "conjure_actors" / "workflows" / "conjure_flux_mesh.json").read_text()),
    name="conjure_flux_mesh.json",
)


def _problems(**kwargs: Any) -> tuple[str, ...]:
    with pytest.raises(WorkflowError) as info:
        preflight(CONJURE, catalog=CATALOG, **kwargs)
    return info.value.problems


def _image(fmt: str, size: tuple[int, int] = (7, 5)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size).save(out, fmt)
    return out.getvalue()


def test_the_example_passes() -> None:
    """The CONJURE workflow with its sketch, a prompt and a seed passes; seeds are bound."""
    checked = preflight(
        CONJURE, catalog=CATALOG, image=example_sketch_png(), prompt="fox", seed=3, jobs=2
    )
    assert checked.bindings["20.seed"] == "3"


def test_a_word_for_an_int_is_refused() -> None:
    """``--set 20.steps=abc`` (issue 14) names node, class, input and value."""
    assert _problems(sets=["20.steps=abc"]) == (
        "node 20 (KSampler) input 'steps': expects an integer, got 'abc'",
    )


def test_numbers_out_of_range_are_refused_all_at_once() -> None:
    """Above a FLOAT's max and below an INT's min: both problems in one error."""
    assert _problems(sets=["20.cfg=1000", "20.steps=0"]) == (
        "node 20 (KSampler) input 'steps': 0 is below the minimum 1",
        "node 20 (KSampler) input 'cfg': 1000 is above the maximum 100.0",
    )


def test_a_combo_value_must_be_a_choice() -> None:
    """A sampler name that the server does not list is refused, with some choices shown."""
    (problem,) = _problems(sets=['20.sampler_name="eulr"'])
    assert problem.startswith("node 20 (KSampler) input 'sampler_name': 'eulr' is not one of:")
    assert "'euler'" in problem


def test_combo_choices_can_be_left_unchecked() -> None:
    """choices=False (a catalogue that is not the target's own) leaves model names alone."""
    preflight(CONJURE, catalog=CATALOG, choices=False, sets=['12.unet_name="mine.safetensors"'])


def test_an_upload_combo_takes_any_name() -> None:
    """LoadImage's list is the server's input folder: the run's own upload is not in it."""
    config = InputConfig.from_object_info([["a.png"], {"image_upload": True}])
    assert check_value("new.png", config) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (True, None),
        ("false", "expects true or false, got 'false'"),
        (1, "expects true or false, got 1"),
    ],
)
def test_a_boolean_takes_true_or_false(value: object, problem: str | None) -> None:
    """ComfyUI's bool("false") is True: anything but a JSON boolean is refused."""
    assert check_value(value, InputConfig("BOOLEAN")) == problem


def test_a_fraction_for_an_int_is_refused() -> None:
    """ComfyUI would cut 1.5 to 1 silently."""
    assert check_value(1.5, InputConfig("INT")) == (
        "expects an integer, got 1.5 (ComfyUI would cut it)"
    )


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 99999999999999999999999])
def test_seeds_outside_64_bits_are_refused(seed: int) -> None:
    """``--seed -1`` and ``--seed 99999999999999999999999`` (issue 14): one problem."""
    assert _problems(seed=seed) == (f"--seed {seed}: a seed is an integer from 0 to {MAX_SEED}",)


def test_flag_problems_are_the_inputs_not_the_workflow() -> None:
    """Problems of flags only: an InputError that says them as they are, no workflow name."""
    with pytest.raises(InputError) as info:
        preflight(CONJURE, catalog=CATALOG, seed=-1)
    assert str(info.value) == f"--seed -1: a seed is an integer from 0 to {MAX_SEED}"


def test_the_last_seed_of_many_jobs_must_fit() -> None:
    """Job i runs seed + i: the last one must fit in 64 bits too."""
    assert check_seed(MAX_SEED, jobs=2) == [
        f"--seed {MAX_SEED} with 2 jobs (last seed {MAX_SEED + 1}): a seed is an integer"
        f" from 0 to {MAX_SEED}"
    ]


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "GIF", "BMP"])
def test_image_headers_give_format_and_size(fmt: str) -> None:
    """Each format LoadImage reads is recognised with its size in pixels."""
    info = image_info(_image(fmt))
    assert info is not None
    assert (info.format.upper(), info.width, info.height) == (fmt, 7, 5)


def test_a_lossless_webp_is_read() -> None:
    """WebP's VP8L (lossless) header too."""
    out = io.BytesIO()
    Image.new("RGB", (300, 2)).save(out, "WEBP", lossless=True)
    assert image_info(out.getvalue()) == ImageInfo("WebP", 300, 2)


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"", "--image x: the file is empty"),
        (
            b"hello",
            "--image x: " + UNIDENTIFIED,
        ),
        (
            b"\x89PNG\r\n\x1a\n",
            "--image x: " + UNIDENTIFIED,
        ),
    ],
)
def test_bad_images_are_refused(data: bytes, problem: str) -> None:
    """Empty, not an image, a header cut short: one problem each."""
    assert check_image(data, name="x") == [problem]


def test_an_image_over_the_upload_limit_is_refused() -> None:
    """ComfyUI refuses uploads over its max_upload_size."""
    assert check_image(_image("PNG"), name="x", max_bytes=10) == [
        f"--image x: {len(_image('PNG'))} bytes is over ComfyUI's upload limit of 10 bytes"
    ]


@given(st.binary(max_size=64))
def test_image_info_never_raises(data: bytes) -> None:
    """Any bytes: an ImageInfo or None, never an exception (a header is read defensively)."""
    info = image_info(data)
    assert info is None or (info.width >= 0 and info.height >= 0)


@given(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=5),
        st.lists(st.integers(), max_size=2),
    ),
    st.sampled_from(["INT", "FLOAT", "BOOLEAN", "STRING", "COMBO", "IMAGE"]),
)
def test_check_value_is_total_and_one_line(value: object, kind: str) -> None:
    """Any value against any kind: None or a one-line problem, never an exception."""
    config = InputConfig(kind, minimum=0, maximum=10, choices=("a",) if kind == "COMBO" else None)
    problem = check_value(value, config)
    assert problem is None or problem.splitlines() == [problem]


def test_values_of_unknown_classes_are_not_judged() -> None:
    """A class the catalogue does not describe: no value problem invented for it."""
    graph = {"1": {"class_type": "MyNode", "inputs": {"x": "anything"}}}
    assert check_values(graph, CATALOG) == []


_NAME = st.text(max_size=4) | st.sampled_from(["20", "\n", "seed", "steps", "cfg", "image"])
_VALUE = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=4), _NAME)


@given(
    st.dictionaries(
        _NAME,
        st.fixed_dictionaries(
            {
                "class_type": st.sampled_from(["KSampler", "LoadImage", "EmptyLatentImage"])
                | _NAME,
                "inputs": st.dictionaries(_NAME, _VALUE, max_size=4),
            }
        ),
        max_size=4,
    )
)
@pytest.mark.slow
def test_value_problems_of_any_graph_are_one_line(graph: dict[str, Any]) -> None:
    """Issue 17 for values: whatever ids, names and values, each problem is one line."""
    for problem in check_values(graph, CATALOG):
        assert problem.splitlines() == [problem], problem


@given(
    st.dictionaries(
        st.text(alphabet="0123456789ab", min_size=1, max_size=3),
        st.fixed_dictionaries(
            {
                "class_type": st.just("EmptyImage"),
                "inputs": st.fixed_dictionaries(
                    {
                        "width": st.integers(-2, 3) | st.text(max_size=2),
                        "height": st.integers(-2, 3),
                    }
                ),
            }
        ),
        max_size=6,
    )
)
def test_value_problems_come_in_node_order_then_input_order(graph: dict[str, Any]) -> None:
    """The problems of a graph are those of its nodes one by one, nodes in id order
    (numeric ids numerically), each node's in its inputs' order."""
    from conjure_actors.domain.workflow import node_sort_key

    one_by_one = [
        problem
        for nid in sorted(graph, key=node_sort_key)
        for problem in check_values({nid: graph[nid]}, CATALOG)
    ]
    assert check_values(graph, CATALOG) == one_by_one


def test_image_problem_says_what_check_image_says_without_the_flag() -> None:
    """image_problem is check_image's reason, for callers that name the file their way."""
    from conjure_actors.domain.preflight import image_problem

    assert image_problem(example_sketch_png()) is None
    for data in (b"", b"hello", _image("PNG", (7, 5))[:20]):
        (line,) = check_image(data, name="x.png")
        assert line == f"--image x.png: {image_problem(data)}"


def test_check_prompt_names_the_first_refused_node_and_its_class() -> None:
    """A prompt with a class the target lacks: refused, naming that node and its class."""
    from conjure_actors.domain.preflight import check_prompt
    from conjure_actors.domain.workflow import catalog_from_object_info
    from conjure_actors.sim.catalog import OBJECT_INFO

    catalog = catalog_from_object_info(OBJECT_INFO)
    prompt = {
        "1": {"class_type": "MyCustomNode", "inputs": {}},
        "2": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 7, "height": 8, "batch_size": 1},
        },
        "3": {"class_type": "SaveLatent", "inputs": {"samples": ["2", 0], "filename_prefix": "x"}},
    }
    refused = check_prompt(prompt, catalog)
    assert refused is not None
    assert (refused.node_id, refused.class_type) == ("1", "MyCustomNode")
    assert refused.problems[0] == "node 1: unknown class 'MyCustomNode' (not in the node catalog)"
    assert "node 2 (EmptyLatentImage) input 'width': 7 is below the minimum 16" in refused.line()
    del prompt["1"]
    prompt["2"]["inputs"].update(width=512, height=512)
    assert check_prompt(prompt, catalog) is None


def test_an_image_cut_short_after_its_header_does_not_decode() -> None:
    """The sketch's first 100 bytes: a PNG header that parses, pixels that do not; refused
    as ``run --image`` refuses it (ComfyUI's LoadImage would fail on it, on a paid machine)."""
    from conjure_actors.domain.preflight import image_problem

    problem = image_problem(example_sketch_png()[:100])
    assert problem is not None
    assert problem.startswith("does not decode (")
    assert check_image(example_sketch_png()[:100], name="x.png") == [f"--image x.png: {problem}"]


def test_an_image_over_the_decode_limit_cut_short_is_still_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over DECODE_PIXELS the pixels are not decoded (a service checks every image), but the
    checksums to the last chunk are: a PNG cut short is refused all the same."""
    from conjure_actors.domain import preflight

    monkeypatch.setattr(preflight, "DECODE_PIXELS", 16)
    assert preflight.image_problem(example_sketch_png()) is None
    problem = preflight.image_problem(example_sketch_png()[:100])
    assert problem is not None
    assert problem.startswith("does not decode (")


def test_pillow_s_large_image_warning_is_not_printed(monkeypatch: pytest.MonkeyPatch) -> None:
    """An image over Pillow's MAX_IMAGE_PIXELS but under twice it decodes with a warning
    (ComfyUI's LoadImage takes it): accepted, and no warning reaches the terminal (the
    suite turns warnings into errors)."""
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, format="PNG")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    from conjure_actors.domain.preflight import image_problem

    assert image_problem(buffer.getvalue()) is None


def test_an_image_pillow_cannot_identify_is_said_without_a_python_repr() -> None:
    """The sketch's first 30 bytes (cut inside its first chunk): Pillow's error names a
    ``<_io.BytesIO object at 0x...>``; the problem (run, validate and serve say it) does not."""
    from conjure_actors.domain.preflight import image_problem

    assert image_problem(example_sketch_png()[:30]) == UNIDENTIFIED


@pytest.mark.parametrize("fmt", ["TIFF", "TGA", "PPM"])
def test_an_image_pillow_decodes_is_accepted_whatever_its_format(fmt: str) -> None:
    """ComfyUI's LoadImage opens whatever Pillow decodes: a whole TIFF (TGA, PPM...) is
    accepted by run --image, validate and /api/conjure/jobs, as by /api/v2/jobs (G3)."""
    assert check_image(_image(fmt, (320, 240)), name="a.tiff") == []


def test_a_tiff_cut_short_is_refused_without_blaming_a_header() -> None:
    """A TIFF cut short is refused (one line, no Python repr); a whole one never hears that
    its header is cut short."""
    from conjure_actors.domain.preflight import image_problem

    whole = _image("TIFF", (320, 240))
    problem = image_problem(whole[: len(whole) // 2])
    assert problem is not None
    assert "\n" not in problem
    assert " at 0x" not in problem


def _invert(image: object) -> dict[str, Any]:
    return {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "ImageInvert", "inputs": {"image": image}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "x"}},
    }


def test_a_value_where_only_a_link_will_do_is_refused() -> None:
    """A number given to an IMAGE input (in the graph or by ``--set``) passes ComfyUI's
    validation and fails the node on the machine: refused, naming the type it needs."""
    assert check_values(_invert(3), CATALOG) == [
        "node 2 (ImageInvert) input 'image': needs a link to a node's IMAGE output"
        ' (["NODE", INDEX]), not the value 3'
    ]
    assert check_values(_invert(["1", 0]), CATALOG) == []


def test_a_value_where_a_link_of_several_types_will_do_names_them_all() -> None:
    """An input that takes ``A,B`` (either type) says both in its problem."""
    config = InputConfig("MODEL_TASK_ID,RIG_TASK_ID")
    made = frozenset({"MODEL_TASK_ID", "RIG_TASK_ID"})
    assert check_value("t", config, made=made) == (
        "needs a link to a node's MODEL_TASK_ID or RIG_TASK_ID output"
        " ([\"NODE\", INDEX]), not the value 't'"
    )


def test_null_on_an_optional_link_input_is_left_as_comfyui_leaves_it() -> None:
    """ComfyUI gives a node None for a null as for an optional input left unconnected:
    not refused there; on a required link input it is."""
    graph = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 8, "height": 8, "batch_size": 1}},
        "2": {"class_type": "JoinImageWithAlpha", "inputs": {"image": ["1", 0], "alpha": None}},
        "3": {"class_type": "ImageCompositeMasked", "inputs": {"mask": None}},
    }
    assert check_values(graph, CATALOG) == [
        "node 2 (JoinImageWithAlpha) input 'alpha': needs a link to a node's MASK output"
        ' (["NODE", INDEX]), not the value null'
    ]


@pytest.mark.parametrize("kind", ["*", "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION"])
def test_core_widget_types_beyond_the_five_take_a_value(kind: str) -> None:
    """WebcamCapture's WEBCAM, Load3D's LOAD_3D... and ``*`` (any) take a literal."""
    made = output_types(CATALOG) | {kind}
    assert check_value("capture.png", InputConfig(kind), made=made) is None


def test_a_type_no_node_outputs_takes_a_value() -> None:
    """A widget of a type no node of the catalogue outputs (newer ComfyUI's SaveVideo
    ``format``: COMFY_DYNAMICCOMBO_V3; RecordAudio's AUDIO_RECORD; a custom node's own) takes
    a value: only a type some node makes needs a link."""
    info = {
        "LoadVideo": {"input": {"required": {"file": [["a.mp4"], {}]}}, "output": ["VIDEO"]},
        "SaveVideo": {
            "input": {
                "required": {
                    "video": ["VIDEO", {}],
                    "format": ["COMFY_DYNAMICCOMBO_V3", {"options": []}],
                }
            },
            "output": [],
            "output_node": True,
        },
    }
    catalog = catalog_from_object_info(info)
    graph = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "a.mp4"}},
        "2": {"class_type": "SaveVideo", "inputs": {"video": ["1", 0], "format": "mp4"}},
    }
    assert check_values(graph, catalog) == []
    graph["2"]["inputs"]["video"] = "a.mp4"
    assert check_values(graph, catalog) == [
        "node 2 (SaveVideo) input 'video': needs a link to a node's VIDEO output"
        " ([\"NODE\", INDEX]), not the value 'a.mp4'"
    ]


def test_bundled_workflows_pass_the_value_checks() -> None:
    """Every bundled workflow's literals pass against the simulator's catalogue."""
    for path in sorted((ROOT / "conjure_actors" / "workflows").glob("*.json")):
        assert check_values(json.loads(path.read_text()), CATALOG) == [], path.name


@pytest.mark.slow  # ~0.2 s or more: the inner loop runs without it, CI with it
@given(st.data())
def test_catalog_workflows_draw_no_value_where_a_link_is_needed(data: st.DataObject) -> None:
    """The harness's drawn graphs (tests run them end to end) pass the value checks."""
    from conjure_actors.testing import catalog_workflows

    assert check_values(data.draw(catalog_workflows()), CATALOG) == []
