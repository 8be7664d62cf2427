"""What each simulated node class "computes": typed placeholder values, files and UI output.

No pixels are processed. An image, latent, model or mesh is a :class:`Blob`: its kind, a
digest that depends on every input (so two different prompts never collide and the same
prompt always gives the same bytes), and the sizes later nodes need (an ``EmptyImage``
sized by ``GetImageSize`` must know the real width). Output nodes turn blobs into real files
through :mod:`conjure_actors.sim.media`.

A node function receives the resolved inputs and a :class:`NodeContext` (files, frames) and
returns ``(outputs, ui)``. Raising :class:`NodeFailure` is a run-time error that the
simulator reports as ``execution_error`` with the given exception type and message.
"""

from __future__ import annotations

import hashlib
import posixpath
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import attrs

from conjure_actors.sim.media import png_size, write_glb, write_png

__all__ = [
    "EXECUTABLE_CLASSES",
    "NODE_FUNCTIONS",
    "Blob",
    "NodeContext",
    "NodeFailure",
    "digest_of",
    "node_function",
    "progress_steps",
]


@attrs.frozen
class Blob:
    """A placeholder for a tensor-like value flowing between nodes."""

    kind: str
    digest: bytes
    width: int = 0
    height: int = 0
    batch: int = 1
    noisy: bool = False


class NodeFailure(Exception):
    """A run-time failure inside a node: reported as ``execution_error``."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


class NodeContext(Protocol):
    """What a node may do besides computing: read inputs, write files, send text frames."""

    def read_input(self, name: str) -> bytes | None: ...

    def save_file(self, kind: str, subfolder: str, prefix: str, ext: str, data: bytes) -> str:
        """Store ``data`` as ``<prefix>_<counter>_.<ext>``; returns the file name."""
        ...

    def temp_prefix(self) -> str: ...

    def send_text(self, node_id: str, text: str) -> None: ...

    def send_image(self, node_id: str, png: bytes, step: int, steps: int) -> None: ...


def _value_key(value: object) -> bytes:
    if isinstance(value, Blob):
        return value.digest
    return repr(value).encode()


def digest_of(class_type: str, inputs: Mapping[str, object]) -> bytes:
    """A digest of a node's class and resolved inputs (the identity of its outputs)."""
    h = hashlib.sha256(class_type.encode())
    for name in sorted(inputs):
        h.update(b"\x00" + name.encode() + b"=" + _value_key(inputs[name]))
    return h.digest()


def _slot(digest: bytes, index: int) -> bytes:
    return hashlib.sha256(digest + bytes([index])).digest()


def _first_sized(inputs: Mapping[str, object]) -> Blob | None:
    for value in inputs.values():
        if isinstance(value, Blob) and value.width:
            return value
    return None


def progress_steps(class_type: str, inputs: Mapping[str, Any]) -> int:
    """How many progress updates a node sends (0: it reports none)."""
    if class_type == "KSampler":
        return int(inputs.get("steps", 1))
    if class_type == "SaveImageWebsocket":
        images = inputs.get("images")
        return images.batch if isinstance(images, Blob) else 1
    return 0


_Result = tuple[tuple[object, ...], dict[str, Any] | None]
_NodeFn = Callable[[str, dict[str, Any], NodeContext, bytes], _Result]


def _split_prefix(prefix: str) -> tuple[str, str]:
    folder, name = posixpath.split(prefix)
    return posixpath.normpath(folder) if folder else "", name


def _empty_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    blob = Blob("IMAGE", d, int(i["width"]), int(i["height"]), int(i["batch_size"]))
    return (blob,), None


def _load_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    name = str(i["image"])
    data = ctx.read_input(name)
    size = png_size(data) if data is not None else None
    if data is None or size is None:
        raise NodeFailure(
            "PIL.UnidentifiedImageError",
            f"cannot identify image file '/srv/comfyui/input/{name}'\n",
        )
    digest = hashlib.sha256(data).digest()
    return (Blob("IMAGE", digest, *size), Blob("MASK", _slot(digest, 1), *size)), None


def _same_size(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _first_sized(i)
    w, h, b = (src.width, src.height, src.batch) if src else (64, 64, 1)
    return (Blob("IMAGE", d, w, h, b),), None


def _add_noise(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = i["image"]
    return (Blob("IMAGE", d, src.width, src.height, src.batch, noisy=True),), None


def _image_scale(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = i["image"]
    w, h = int(i["width"]), int(i["height"])
    if w == 0 and h == 0:
        w, h = src.width, src.height
    elif w == 0:
        w = max(1, round(src.width * h / max(1, src.height)))
    elif h == 0:
        h = max(1, round(src.height * w / max(1, src.width)))
    return (Blob("IMAGE", d, w, h, src.batch),), None


def _image_scale_by(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = i["image"]
    s = float(i["scale_by"])
    w, h = max(1, round(src.width * s)), max(1, round(src.height * s))
    return (Blob("IMAGE", d, w, h, src.batch),), None


def _get_image_size(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = i["image"]
    ctx.send_text(node_id, f"width: {src.width}, height: {src.height}\n batch size: {src.batch}")
    return (src.width, src.height, src.batch), None


def _save_images(kind: str, prefix: str, src: Blob, ctx: NodeContext) -> list[dict[str, str]]:
    subfolder, name = _split_prefix(prefix)
    files = []
    for k in range(max(1, src.batch)):
        png = write_png(src.width, src.height, _slot(src.digest, k))
        filename = ctx.save_file(kind, subfolder, name, "png", png)
        files.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return files


def _save_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (), {"images": _save_images("output", str(i["filename_prefix"]), i["images"], ctx)}


def _preview_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (), {"images": _save_images("temp", ctx.temp_prefix(), i["images"], ctx)}


def _save_image_websocket(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = i["images"]
    for k in range(max(1, src.batch)):
        # Full size, like the real node: a noisy 1024x1024 image makes a frame over 1 MiB.
        png = write_png(src.width, src.height, _slot(src.digest, k), max_side=4096, noise=src.noisy)
        ctx.send_image(node_id, png, k, src.batch)
    return (), None


def _save_glb(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    subfolder, name = _split_prefix(str(i["filename_prefix"]))
    filename = ctx.save_file("output", subfolder, name, "glb", write_glb(i["mesh"].digest))
    return (), {"3d": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}


def _produce(
    *kinds: str, size: Callable[[dict[str, Any]], tuple[int, int]] | None = None
) -> _NodeFn:
    """A node that turns its inputs into fresh blobs of the given kinds."""

    def run(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
        if size is not None:
            w, h = size(i)
        else:
            src = _first_sized(i)
            w, h = (src.width, src.height) if src else (0, 0)
        return tuple(Blob(kind, _slot(d, n), w, h) for n, kind in enumerate(kinds)), None

    return run


def _depth_size(i: dict[str, Any]) -> tuple[int, int]:
    src = i["image"]
    res = int(i["resolution"])
    return res, max(1, round(res * src.height / max(1, src.width)))


def _latent_from_pixels(i: dict[str, Any]) -> tuple[int, int]:
    src = i["pixels"]
    return max(1, src.width // 8), max(1, src.height // 8)


def _pixels_from_latent(i: dict[str, Any]) -> tuple[int, int]:
    src = i["samples"]
    return src.width * 8, src.height * 8


NODE_FUNCTIONS: dict[str, _NodeFn] = {
    "EmptyImage": _empty_image,
    "LoadImage": _load_image,
    "ImageInvert": _same_size,
    "ImageBlur": _same_size,
    "ImageSharpen": _same_size,
    "ImageAddNoise": _add_noise,
    "ImageScale": _image_scale,
    "ImageScaleBy": _image_scale_by,
    "GetImageSize": _get_image_size,
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "SaveImageWebsocket": _save_image_websocket,
    "DualCLIPLoader": _produce("CLIP"),
    "UNETLoader": _produce("MODEL"),
    "VAELoader": _produce("VAE"),
    "DepthAnythingV2Preprocessor": _produce("IMAGE", size=_depth_size),
    "CLIPTextEncodeFlux": _produce("CONDITIONING"),
    "ConditioningZeroOut": _produce("CONDITIONING"),
    "InstructPixToPixConditioning": _produce(
        "CONDITIONING", "CONDITIONING", "LATENT", size=_latent_from_pixels
    ),
    "KSampler": _produce("LATENT"),
    "VAEDecode": _produce("IMAGE", size=_pixels_from_latent),
    "ImageOnlyCheckpointLoader": _produce("MODEL", "CLIP_VISION", "VAE"),
    "CLIPVisionEncode": _produce("CLIP_VISION_OUTPUT"),
    "Hunyuan3Dv2Conditioning": _produce("CONDITIONING", "CONDITIONING"),
    "EmptyLatentHunyuan3Dv2": _produce(
        "LATENT", size=lambda i: (int(i["resolution"]), int(i["batch_size"]))
    ),
    "VAEDecodeHunyuan3D": _produce("VOXEL"),
    "VoxelToMeshBasic": _produce("MESH"),
    "SaveGLB": _save_glb,
}


EXECUTABLE_CLASSES: frozenset[str] = frozenset(NODE_FUNCTIONS)
"""Classes with their own implementation (the others get :func:`_stand_in`)."""

_PRIMITIVE_DEFAULTS: dict[str, object] = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}


def _stand_in(outputs: list[Any]) -> _NodeFn:
    """Any other catalogue class: fresh values of its declared output types, sized like its
    ``width``/``height`` inputs or its first sized input."""

    def run(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
        if isinstance(i.get("width"), int) and isinstance(i.get("height"), int):
            w, h = int(i["width"]), int(i["height"])
        else:
            src = _first_sized(i)
            w, h = (src.width, src.height) if src else (512, 512)
        values: list[object] = []
        for n, kind in enumerate(outputs):
            if isinstance(kind, str) and kind in _PRIMITIVE_DEFAULTS:
                values.append(_PRIMITIVE_DEFAULTS[kind])
            else:
                values.append(Blob(str(kind), _slot(d, n), w, h))
        return tuple(values), None

    return run


def node_function(class_type: str, outputs: list[Any]) -> _NodeFn:
    """The implementation of ``class_type`` (a stand-in if it has none of its own)."""
    fn = NODE_FUNCTIONS.get(class_type)
    return fn if fn is not None else _stand_in(outputs)
