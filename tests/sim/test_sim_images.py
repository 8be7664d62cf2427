"""The simulator's images are real: the size the graph asks for, the node's operation on the
pixels, SaveImage's text chunks, and ``/view``'s ``preview``, ``channel`` and ``Range``."""

from __future__ import annotations

import io
import json
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.catalog import OBJECT_INFO
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.comfyui_nodes import EXECUTABLE_CLASSES, NODE_FUNCTIONS, NodeFailure
from conjure_actors.testing.strategies import catalog_workflows

WORKFLOWS = Path(__file__).parents[2] / "conjure_actors" / "workflows"


def png_bytes(width: int, height: int, mode: str = "RGB") -> bytes:
    """A gradient PNG (every pixel differs from its mirror image)."""
    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :]
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None]
    planes = [xs + 0 * ys, ys + 0 * xs, (xs + ys) / 2]
    if mode == "RGBA":
        planes.append(np.full((height, width), 128, dtype=np.float32))
    array = np.stack(planes, axis=2).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format="PNG")
    return buffer.getvalue()


class Env:
    def __init__(self, sim: ComfyUISim, http: httpx.AsyncClient) -> None:
        self.sim = sim
        self.http = http

    async def run(self, graph: dict[str, Any], **extra: Any) -> dict[str, Any]:
        """Queue ``graph``, wait for its history entry, return it."""
        response = await self.http.post("/prompt", json={"prompt": graph, **extra})
        assert response.status_code == 200, response.text
        pid = response.json()["prompt_id"]
        with trio.fail_after(3600):
            while True:
                entry = (await self.http.get(f"/history/{pid}")).json()
                if entry:
                    return dict(entry[pid])
                await trio.sleep(0.01)

    async def saved(self, entry: dict[str, Any], node: str) -> Image.Image:
        (image,) = entry["outputs"][node]["images"]
        response = await self.http.get("/view", params=image)
        assert response.status_code == 200
        return Image.open(io.BytesIO(response.content))


@pytest.fixture
async def env(nursery: trio.Nursery) -> AsyncIterator[Env]:
    sim = ComfyUISim(wall=TrioWallClock().now)
    await nursery.start(sim.run)
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        yield Env(sim, http)
    nursery.cancel_scope.cancel()


def chain(*nodes: tuple[str, dict[str, Any]], prefix: str = "out") -> dict[str, Any]:
    """LoadImage(in.png) -> each node in turn -> SaveImage."""
    graph: dict[str, Any] = {"1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}}}
    for k, (cls, inputs) in enumerate(nodes, start=2):
        graph[str(k)] = {"class_type": cls, "inputs": {"image": [str(k - 1), 0], **inputs}}
    last = str(len(nodes) + 1)
    graph["99"] = {
        "class_type": "SaveImage",
        "inputs": {"images": [last, 0], "filename_prefix": prefix},
    }
    return graph


async def test_saved_image_has_the_input_size_not_a_capped_one(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """320x192 through ImageInvert comes back 320x192 (the old simulator capped it at 256)."""
    env.sim.add_input("in.png", png_bytes(320, 192))
    entry = await env.run(chain(("ImageInvert", {})))
    img = await env.saved(entry, "99")
    assert img.size == (320, 192)


async def test_invert_inverts_the_pixels(env: Env, autojump_clock: trio.abc.Clock) -> None:
    """ImageInvert's output is 255 minus the input, pixel by pixel."""
    env.sim.add_input("in.png", png_bytes(40, 30))
    entry = await env.run(chain(("ImageInvert", {})))
    got = np.asarray((await env.saved(entry, "99")).convert("RGB"), dtype=np.int16)
    want = 255 - np.asarray(Image.open(io.BytesIO(png_bytes(40, 30))), dtype=np.int16)
    assert np.abs(got - want).max() <= 1


async def test_image_flip_mirrors_the_pixels(env: Env, autojump_clock: trio.abc.Clock) -> None:
    """ImageFlip 'y-axis: horizontally' mirrors left and right."""
    env.sim.add_input("in.png", png_bytes(24, 16))
    entry = await env.run(chain(("ImageFlip", {"flip_method": "y-axis: horizontally"})))
    got = np.asarray((await env.saved(entry, "99")).convert("RGB"))
    want = np.asarray(Image.open(io.BytesIO(png_bytes(24, 16))))[:, ::-1]
    assert np.array_equal(got, want)


async def test_image_to_mask_asked_for_the_alpha_of_an_rgb_image_fails_as_comfyui_does(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """LoadImage gives RGB: ImageToMask's "alpha" indexes a fourth channel that is not there
    (ComfyUI: IndexError), so the prompt ends in an execution error at that node."""
    env.sim.add_input("in.png", png_bytes(8, 8, mode="RGBA"))
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "in.png"}},
        "2": {"class_type": "ImageToMask", "inputs": {"image": ["1", 0], "channel": "alpha"}},
        "3": {"class_type": "MaskToImage", "inputs": {"mask": ["2", 0]}},
        "99": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "o"}},
    }
    entry = await env.run(graph)
    assert entry["status"]["status_str"] == "error"
    (error,) = [m for kind, m in entry["status"]["messages"] if kind == "execution_error"]
    assert (error["node_type"], error["exception_type"]) == ("ImageToMask", "IndexError")


async def test_image_composite_masked_repeats_a_smaller_source_batch_as_comfyui_does(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """A source batch of 2 pasted on a destination batch of 3: ComfyUI repeats the source to
    the destination's batch size (``repeat_to_batch_size``), so the third image gets the
    first source again (the simulator crashed on numpy's broadcast; a catalog_workflows draw
    of two EmptyImages of batch 2 and 3 made test_catalog_workflows_from_the_whole_catalogue_run
    fail)."""

    def empty(width: int, batch: int, color: int) -> dict[str, Any]:
        inputs = {"width": width, "height": width, "batch_size": batch, "color": color}
        return {"class_type": "EmptyImage", "inputs": inputs}

    paste = {"destination": ["1", 0], "source": ["4", 0], "x": 2, "y": 2, "resize_source": False}
    graph = {
        "1": empty(8, 3, 0x000000),
        "2": empty(4, 1, 0xFF0000),
        "3": empty(4, 1, 0x0000FF),
        "4": {"class_type": "ImageBatch", "inputs": {"image1": ["2", 0], "image2": ["3", 0]}},
        "5": {"class_type": "ImageCompositeMasked", "inputs": paste},
        "99": {"class_type": "SaveImage", "inputs": {"images": ["5", 0], "filename_prefix": "o"}},
    }
    entry = await env.run(graph)
    assert entry["status"]["status_str"] == "success", entry["status"]
    pixels = []
    for image in entry["outputs"]["99"]["images"]:
        response = await env.http.get("/view", params=image)
        got = np.asarray(Image.open(io.BytesIO(response.content)).convert("RGB"))
        assert tuple(got[0, 0]) == (0, 0, 0)
        pixels.append(tuple(int(v) for v in got[3, 3]))
    assert pixels == [(255, 0, 0), (0, 0, 255), (255, 0, 0)]


def _execution_error(entry: dict[str, Any]) -> dict[str, Any]:
    assert entry["status"]["status_str"] == "error", entry["status"]
    (error,) = [m for kind, m in entry["status"]["messages"] if kind == "execution_error"]
    return dict(error)


@pytest.mark.parametrize(
    ("cls", "radius", "size", "message"),
    [
        ("ImageBlur", 8, (8, 20), "padding (8, 8) at dimension 3 of input [1, 3, 20, 8]"),
        ("ImageSharpen", 5, (12, 4), "padding (5, 5) at dimension 2 of input [1, 3, 4, 12]"),
    ],
)
async def test_a_radius_not_below_a_side_fails_the_node_as_comfyui_does(
    env: Env,
    autojump_clock: trio.abc.Clock,
    cls: str,
    radius: int,
    size: tuple[int, int],
    message: str,
) -> None:
    """ImageBlur and ImageSharpen reflect-pad by their radius: torch refuses a pad that is
    not smaller than the side (the width is checked first), so ComfyUI fails the node."""
    env.sim.add_input("in.png", png_bytes(*size))
    name = "blur_radius" if cls == "ImageBlur" else "sharpen_radius"
    entry = await env.run(chain((cls, {name: radius, "sigma": 1.0, "alpha": 1.0})))
    error = _execution_error(entry)
    assert (error["node_type"], error["exception_type"]) == (cls, "RuntimeError")
    assert error["exception_message"].endswith(message)


def _blend(first: int, second: int, mode: str = "normal") -> tuple[Any, ...]:
    image1 = np.full((first, 4, 4, 3), 0.25, dtype=np.float32)
    image2 = np.full((second, 4, 4, 3), 0.75, dtype=np.float32)
    inputs = {"image1": image1, "image2": image2, "blend_factor": 0.5, "blend_mode": mode}
    result: tuple[Any, ...] = NODE_FUNCTIONS["ImageBlend"]("1", inputs, None, b"")  # type: ignore[arg-type]
    return result


@pytest.mark.parametrize(("mode", "a", "b"), [("normal", 2, 3), ("soft_light", 3, 2)])
def test_image_blend_of_batches_that_do_not_broadcast_fails_as_torch_does(
    mode: str, a: int, b: int
) -> None:
    """Batches of 2 and 3 do not broadcast: torch's message names the two operands of the
    first product (soft_light's multiplies image2 by image1)."""
    with pytest.raises(NodeFailure) as failed:
        _blend(2, 3, mode)
    assert failed.value.exception_type == "RuntimeError"
    assert failed.value.message == (
        f"The size of tensor a ({a}) must match the size of tensor b ({b}) "
        "at non-singleton dimension 0"
    )


@pytest.mark.parametrize(("first", "second"), [(1, 3), (3, 1)])
def test_image_blend_broadcasts_a_batch_of_one_to_the_other(first: int, second: int) -> None:
    """A batch of 1 broadcasts against 3, whichever input it is: the result has 3 images."""
    ((out,), _) = _blend(first, second)
    assert out.shape == (3, 4, 4, 3)
    assert np.allclose(out, 0.5)


def test_image_composite_masked_repeats_a_smaller_mask_batch() -> None:
    """The mask is repeated to the destination's batch too (ComfyUI repeats it to the
    source's, already the destination's): a mask batch of 2 on a batch of 3 pastes."""
    dest = np.zeros((3, 4, 4, 3), dtype=np.float32)
    source = np.ones((1, 4, 4, 3), dtype=np.float32)
    mask = np.stack([np.ones((4, 4)), np.zeros((4, 4))]).astype(np.float32)
    inputs = {"destination": dest, "source": source, "x": 0, "y": 0, "resize_source": False}
    ((out,), _) = NODE_FUNCTIONS["ImageCompositeMasked"]("1", {**inputs, "mask": mask}, None, b"")  # type: ignore[arg-type]
    assert [float(out[k].mean()) for k in range(3)] == [1.0, 0.0, 1.0]


async def test_image_scale_gives_the_requested_size(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """ImageScale to 96x64, then a blur: the saved file is 96x64."""
    env.sim.add_input("in.png", png_bytes(40, 30))
    graph = chain(
        (
            "ImageScale",
            {"upscale_method": "bilinear", "width": 96, "height": 64, "crop": "disabled"},
        ),
        ("ImageBlur", {"blur_radius": 3, "sigma": 1.5}),
    )
    entry = await env.run(graph)
    assert (await env.saved(entry, "99")).size == (96, 64)


async def test_saved_png_carries_prompt_and_workflow_text(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """SaveImage writes the prompt and each extra_pnginfo entry (workflow) as text chunks."""
    env.sim.add_input("in.png", png_bytes(8, 8))
    graph = chain(("ImageInvert", {}))
    workflow = {"nodes": [{"id": 1}], "links": []}
    entry = await env.run(graph, extra_data={"extra_pnginfo": {"workflow": workflow}})
    img = await env.saved(entry, "99")
    assert json.loads(img.text["prompt"]) == graph
    assert json.loads(img.text["workflow"]) == workflow


async def test_conjure_workflow_outputs_have_the_requested_shapes(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """The model nodes' stand-ins: the depth image is 1024 wide as asked, the GLB is valid."""
    graph = json.loads((WORKFLOWS / "conjure_flux_mesh.json").read_text())
    entry = await env.run(graph)
    assert entry["status"]["status_str"] == "success"
    assert (await env.saved(entry, "24")).size == (1024, 1024)
    (mesh,) = entry["outputs"]["33"]["3d"]
    glb = (await env.http.get("/view", params=mesh)).content
    magic, version, length = struct.unpack("<4sII", glb[:12])
    assert (magic, version, length) == (b"glTF", 2, len(glb))


VIEW = {"filename": "out_00001_.png", "subfolder": "", "type": "output"}


async def _one_saved(env: Env, mode: str = "RGB") -> bytes:
    env.sim.add_input("in.png", png_bytes(32, 24, mode))
    await env.run(chain(("ImageInvert", {})))
    return env.sim.produced["output/out_00001_.png"]


@pytest.mark.parametrize(
    ("preview", "content_type", "fmt"),
    [
        ("webp;50", "image/webp", "WEBP"),
        ("jpeg;90", "image/jpeg", "JPEG"),
        ("gif;5", "image/webp", "WEBP"),
    ],
)
async def test_view_preview_reencodes(
    env: Env, autojump_clock: trio.abc.Clock, preview: str, content_type: str, fmt: str
) -> None:
    """/view?preview=fmt;Q re-encodes as webp or jpeg (anything else becomes webp)."""
    await _one_saved(env)
    response = await env.http.get("/view", params={**VIEW, "preview": preview})
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["content-disposition"] == 'filename="out_00001_.png"'
    img = Image.open(io.BytesIO(response.content))
    assert (img.format, img.size) == (fmt, (32, 24))


async def test_view_preview_quality_changes_the_size(
    env: Env, autojump_clock: trio.abc.Clock
) -> None:
    """A lower JPEG quality gives a smaller body."""
    await _one_saved(env)
    low = await env.http.get("/view", params={**VIEW, "preview": "jpeg;10"})
    high = await env.http.get("/view", params={**VIEW, "preview": "jpeg;95"})
    assert len(low.content) < len(high.content)


async def test_view_channel_rgb_and_a(env: Env, autojump_clock: trio.abc.Clock) -> None:
    """channel=rgb is a PNG without alpha; channel=a an RGBA PNG holding only the alpha."""
    await _one_saved(env)
    rgb = await env.http.get("/view", params={**VIEW, "channel": "rgb"})
    assert rgb.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(rgb.content)).mode == "RGB"
    alpha = await env.http.get("/view", params={**VIEW, "channel": "a"})
    img = Image.open(io.BytesIO(alpha.content))
    assert img.mode == "RGBA"
    assert img.getchannel("A").getextrema() == (255, 255)  # the saved PNG has no alpha


@pytest.mark.parametrize(
    ("header", "span"),
    [("bytes=0-9", (0, 10)), ("bytes=10-", (10, None)), ("bytes=-7", (-7, None))],
)
async def test_view_honours_range(
    env: Env, autojump_clock: trio.abc.Clock, header: str, span: tuple[int, int | None]
) -> None:
    """A Range header gets 206 with the slice and its Content-Range."""
    data = await _one_saved(env)
    response = await env.http.get("/view", params=VIEW, headers={"Range": header})
    assert response.status_code == 206
    start, end = span
    assert response.content == data[start:end]
    first = start % len(data)
    last = first + len(response.content) - 1
    assert response.headers["content-range"] == f"bytes {first}-{last}/{len(data)}"
    assert response.headers["accept-ranges"] == "bytes"


async def test_view_range_past_the_end_is_416(env: Env, autojump_clock: trio.abc.Clock) -> None:
    """A range that starts past the end cannot be served."""
    data = await _one_saved(env)
    response = await env.http.get("/view", params=VIEW, headers={"Range": f"bytes={len(data)}-"})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"


def test_every_executable_class_is_in_the_catalogue() -> None:
    """The classes that run for real are real classes (with their real inputs)."""
    assert set(NODE_FUNCTIONS) <= set(OBJECT_INFO)
    assert {"ImageFlip", "ImageInvert", "SaveImage", "LatentAdd"} <= EXECUTABLE_CLASSES


@settings(max_examples=15, deadline=None)
@given(
    w=st.integers(1, 48),
    h=st.integers(1, 48),
    tw=st.integers(0, 64),
    th=st.integers(0, 64),
)
def test_image_scale_size_property(w: int, h: int, tw: int, th: int) -> None:
    """ImageScale gives the requested size; a zero side keeps the aspect ratio."""
    image = np.zeros((1, h, w, 3), dtype=np.float32)
    inputs = {"image": image, "upscale_method": "area", "width": tw, "height": th}
    ((out,), _) = NODE_FUNCTIONS["ImageScale"]("1", {**inputs, "crop": "disabled"}, None, b"")  # type: ignore[arg-type]
    if tw and th:
        assert out.shape[1:3] == (th, tw)
    elif tw:
        assert out.shape[2] == tw
    elif th:
        assert out.shape[1] == th
    else:
        assert out.shape[1:3] == (h, w)


@settings(max_examples=15, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    radius=st.integers(1, 6),
    sigma=st.floats(0.1, 10.0),
)
def test_blur_keeps_shape_range_and_mean(seed: int, radius: int, sigma: float) -> None:
    """ImageBlur keeps the shape, stays in [0, 1], and (reflect padding) nearly the mean."""
    image = np.random.default_rng(seed).random((1, 20, 24, 3), dtype=np.float32)
    inputs = {"image": image, "blur_radius": radius, "sigma": sigma}
    ((out,), _) = NODE_FUNCTIONS["ImageBlur"]("1", inputs, None, b"")  # type: ignore[arg-type]
    assert out.shape == image.shape
    assert out.min() >= -1e-6
    assert out.max() <= 1 + 1e-6
    assert abs(float(out.mean()) - float(image.mean())) < 0.05


async def _run_to_history(graph: dict[str, Any]) -> dict[str, Any]:
    sim = ComfyUISim()
    async with trio.open_nursery() as nursery:
        await nursery.start(sim.run)
        transport = httpx.ASGITransport(app=sim.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
            entry = await Env(sim, http).run(graph)
        nursery.cancel_scope.cancel()
    return entry


SIZE_SENSITIVE = ["EmptyImage", "ImageScaleBy", "ImageBlur", "ImageSharpen", "ImageBlend"]


@pytest.mark.slow
@settings(max_examples=20, deadline=None)
@given(graph=catalog_workflows(classes=[*SIZE_SENSITIVE, "PreviewImage"], max_nodes=8))
def test_catalog_workflows_of_size_sensitive_classes_run(graph: dict[str, Any]) -> None:
    """Blurs, sharpens and blends over images of drawn sizes and batches: each radius is
    below its image's sides and each blend's batches broadcast, so the graph runs."""
    clock = trio.testing.MockClock(autojump_threshold=0)
    entry = trio.run(_run_to_history, graph, clock=clock)
    assert entry["status"]["status_str"] == "success", entry["status"]


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
@settings(max_examples=15, deadline=None)
@given(graph=catalog_workflows(classes=sorted(OBJECT_INFO), max_nodes=8))
def test_catalog_workflows_from_the_whole_catalogue_run(graph: dict[str, Any]) -> None:
    """Drawn from all 479 classes, a workflow uses only executable ones and runs to success."""
    assert {node["class_type"] for node in graph.values()} <= EXECUTABLE_CLASSES
    clock = trio.testing.MockClock(autojump_threshold=0)
    entry = trio.run(_run_to_history, graph, clock=clock)
    assert entry["status"]["status_str"] == "success", entry["status"]
