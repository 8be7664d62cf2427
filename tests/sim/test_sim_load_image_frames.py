"""The simulator's LoadImage takes the frames of a multi-frame file as ComfyUI's nodes.py
LoadImage does: a batch of an animation's frames, the first frame only of an MPO (its
``excluded_formats``: a phone photo with its preview or depth frame)."""

from __future__ import annotations

import io
from typing import Any

from PIL import Image

from conjure_actors.sim.comfyui_nodes import NODE_FUNCTIONS


class _Inputs:
    """A NodeContext that only reads inputs (LoadImage writes nothing)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files
        self.prompt: dict[str, Any] = {}
        self.extra_pnginfo = None

    def read_input(self, name: str) -> bytes | None:
        return self.files.get(name)


def _frames(fmt: str, colours: list[str]) -> bytes:
    first, *rest = (Image.new("RGB", (16, 12), colour) for colour in colours)
    out = io.BytesIO()
    first.save(out, format=fmt, save_all=True, append_images=rest)
    return out.getvalue()


def _load(data: bytes) -> tuple[Any, ...]:
    ctx: Any = _Inputs({"in.jpg": data})
    outputs, _ = NODE_FUNCTIONS["LoadImage"]("1", {"image": "in.jpg"}, ctx, b"")
    return outputs


def test_an_mpo_gives_its_first_frame_only() -> None:
    """An MPO of two frames: one image (the first, red) and one mask, as real LoadImage."""
    data = _frames("MPO", ["red", "blue"])
    assert Image.open(io.BytesIO(data)).format == "MPO"
    image, mask = _load(data)
    assert image.shape == (1, 12, 16, 3)
    assert mask.shape[0] == 1
    assert image[0, 6, 8, 0] > 0.9 > image[0, 6, 8, 2]


def test_an_animated_gif_still_gives_a_batch_of_its_frames() -> None:
    """Every other multi-frame format stays a batch (torch.cat of the frames)."""
    image, mask = _load(_frames("GIF", ["red", "blue"]))
    assert image.shape == (2, 12, 16, 3)
    assert mask.shape[0] == 2
