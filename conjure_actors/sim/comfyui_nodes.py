"""What the simulated ComfyUI nodes compute.

Values flow between nodes in ComfyUI's own shapes:

- ``IMAGE``: a float32 array ``(batch, height, width, channels)`` in ``[0, 1]``;
- ``MASK``: a float32 array ``(batch, height, width)``;
- ``LATENT``: ``{"samples": array (batch, channels, ...)}``;
- ``INT``/``FLOAT``/``STRING``/``BOOLEAN``: Python values;
- anything a model would produce (``MODEL``, ``CLIP``, ``VAE``, ``CONDITIONING``, ``VOXEL``,
  ``MESH``...): a :class:`Token` naming its kind and a digest of what made it.

Nodes that need no model files (image, mask and latent arithmetic, primitives, strings) run
for real with numpy and Pillow, following ComfyUI's code (``nodes.py``,
``comfy_extras/nodes_images.py``, ``nodes_post_processing.py``, ``nodes_mask.py``...).
:data:`EXECUTABLE_CLASSES` lists them. Nodes that need models are stood in for: they return
values of the declared output types and the right shapes (an image of the requested width
and height, a latent an eighth of it, a GLB from ``SaveGLB``), whose content is a
deterministic pattern drawn from the node's digest (its cache signature: class, inputs and
ancestors), so the same prompt always gives the same bytes.

A node function receives the resolved inputs, a :class:`NodeContext` (files, frames, the
prompt for PNG metadata) and the digest, and returns ``(outputs, ui)``. Raising
:class:`NodeFailure` is a run-time error, reported as ``execution_error``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import posixpath
import struct
from collections.abc import Callable, Mapping
from typing import Any, Final, Protocol

import attrs
import numpy as np
from PIL import Image, ImageOps, ImageSequence, PngImagePlugin, UnidentifiedImageError

from conjure_actors.sim.media import write_glb

__all__ = [
    "EXECUTABLE_CLASSES",
    "NODE_FUNCTIONS",
    "NodeContext",
    "NodeFailure",
    "Token",
    "encode_png",
    "node_function",
    "pixels_of",
    "progress_steps",
    "scaled_size",
]

_Array = np.ndarray[Any, np.dtype[np.float32]]


@attrs.frozen
class Token:
    """A value only a model could compute (``MODEL``, ``CONDITIONING``, ``MESH``...)."""

    kind: str
    digest: bytes


class NodeFailure(Exception):
    """A run-time failure inside a node: reported as ``execution_error``."""

    def __init__(self, exception_type: str, message: str) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.message = message


class NodeContext(Protocol):
    """What a node may do besides computing: read inputs, write files, send frames."""

    @property
    def prompt(self) -> Mapping[str, Any]: ...

    @property
    def extra_pnginfo(self) -> Mapping[str, Any] | None: ...

    def read_input(self, name: str) -> bytes | None: ...

    def save_file(self, kind: str, subfolder: str, prefix: str, ext: str, data: bytes) -> str:
        """Store ``data`` as ``<prefix>_<counter>_.<ext>``; returns the file name."""
        ...

    def temp_prefix(self) -> str: ...

    def send_text(self, node_id: str, text: str) -> None: ...

    def send_image(self, node_id: str, png: bytes, step: int, steps: int) -> None: ...


def progress_steps(class_type: str, inputs: Mapping[str, Any]) -> int:
    """How many progress updates a node sends (0: it reports none)."""
    if class_type in ("KSampler", "KSamplerAdvanced"):
        return int(inputs.get("steps", 1))
    if class_type == "SaveImageWebsocket":
        images = inputs.get("images")
        return int(images.shape[0]) if isinstance(images, np.ndarray) else 1
    return 0


def pixels_of(inputs: Mapping[str, Any]) -> int:
    """The pixel count a node works on: its image/mask/latent inputs (latents count as the
    image they decode to), else the ``width`` x ``height`` x ``batch_size`` it makes."""
    total = 0
    for value in inputs.values():
        if isinstance(value, np.ndarray) and value.ndim >= 3:
            total += int(value.shape[0] * value.shape[1] * value.shape[2])
        elif isinstance(value, dict) and isinstance(value.get("samples"), np.ndarray):
            s = value["samples"]
            total += int(s.shape[0] * math.prod(s.shape[2:]) * (64 if s.ndim == 4 else 1))
    if total:
        return total
    w, h = inputs.get("width"), inputs.get("height")
    if isinstance(w, int) and isinstance(h, int):
        b = inputs.get("batch_size", 1)
        return w * h * (b if isinstance(b, int) else 1)
    return 0


_Result = tuple[tuple[object, ...], dict[str, Any] | None]
_NodeFn = Callable[[str, dict[str, Any], NodeContext, bytes], _Result]

# ------------------------------------------------------------------------------ helpers


def _slot(digest: bytes, index: int) -> bytes:
    return hashlib.sha256(digest + bytes([index])).digest()


def _to_uint8(image: _Array) -> np.ndarray[Any, np.dtype[np.uint8]]:
    """ComfyUI's conversion: ``clip(255 * x, 0, 255).astype(uint8)``."""
    scaled = np.multiply(image, np.float32(255.0), dtype=np.float32)
    np.minimum(scaled, np.float32(255.0), out=scaled)
    np.maximum(scaled, np.float32(0.0), out=scaled)
    out: np.ndarray[Any, np.dtype[np.uint8]] = scaled.astype(np.uint8)
    return out


def _pil(image: _Array) -> Image.Image:
    """One ``(H, W, C)`` image as a Pillow image."""
    return Image.fromarray(_to_uint8(image))


def _from_pil(img: Image.Image) -> _Array:
    return np.asarray(img, dtype=np.float32) / 255.0


def _png_text_chunks(text: Mapping[str, str]) -> bytes:
    """The ``tEXt``/``iTXt`` chunks Pillow writes for ``text`` (taken from a 1x1 PNG)."""
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    chunks, pos = [], 8
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        end = pos + 12 + length
        if data[pos + 4 : pos + 8] in (b"tEXt", b"iTXt", b"zTXt"):
            chunks.append(data[pos:end])
        pos = end
    return b"".join(chunks)


#: PNG encodings of the stand-in images (a model output of a given size is always the same
#: picture), so that a FLUX-sized output costs its encoding once, not once per prompt.
_ENCODED: dict[tuple[Any, ...], bytes] = {}


def encode_png(
    image: _Array, *, text: Mapping[str, str] | None = None, compress_level: int = 4
) -> bytes:
    """One ``(H, W, C)`` image as PNG bytes, with Pillow's text chunks for ``text`` placed
    after ``IHDR`` as SaveImage writes them."""
    key = _standing_in(image)
    png = _ENCODED.get((*key, compress_level)) if key is not None else None
    if png is None:
        buffer = io.BytesIO()
        if _uniform(image) and image.shape[-1] in (3, 4):
            color = tuple(int(v) for v in _to_uint8(image[0, 0]))
            img = Image.new("RGB" if len(color) == 3 else "RGBA", image.shape[1::-1], color)
        else:
            img = _pil(image)
        img.save(buffer, format="PNG", compress_level=compress_level)
        png = buffer.getvalue()
        if key is not None:
            _remember(_ENCODED, (*key, compress_level), png)
    if not text:
        return png
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + _png_text_chunks(text) + png[ihdr_end:]


_PATTERNS: dict[tuple[int, int, int], _Array] = {}
_CACHED: Final = 16


def _remember(cache: dict[Any, Any], key: Any, value: Any) -> None:
    if len(cache) >= _CACHED:
        cache.pop(next(iter(cache)))
    cache[key] = value


def _pattern(batch: int, height: int, width: int) -> _Array:
    """The picture standing in for a model's image output: a vertical colour ramp, made
    once per size and read-only (nodes never write into their inputs)."""
    key = (max(1, batch), max(1, height), max(1, width))
    out = _PATTERNS.get(key)
    if out is None:
        lo = np.array([0.25, 0.35, 0.55], dtype=np.float32)
        hi = np.array([0.85, 0.6, 0.3], dtype=np.float32)
        ys = np.linspace(0.0, 1.0, key[1], dtype=np.float32)[:, None, None]
        out = np.broadcast_to(ys * (hi - lo) + lo, (*key, 3)).copy()
        out.flags.writeable = False
        _remember(_PATTERNS, key, out)
    return out


def _uniform(image: _Array) -> bool:
    """Whether ``image`` (``(..., H, W, C)``) is a broadcast of one colour (EmptyImage's)."""
    return image.ndim >= 3 and image.strides[-3] == 0 and image.strides[-2] == 0


def _standing_in(image: _Array) -> tuple[Any, ...] | None:
    """A key for ``image`` if its encoding can be reused: one picture of a stand-in batch
    (its size says it all) or a uniform image (its size and colour)."""
    if image.ndim != 3:
        return None
    if _uniform(image):
        return (image.shape[0], image.shape[1], _to_uint8(image[:1, :1]).tobytes())
    base = image.base if image.base is not None else image
    if not isinstance(base, np.ndarray) or base.ndim != 4:
        return None
    if image.shape != base.shape[1:] or _PATTERNS.get(base.shape[:3]) is not base:
        return None
    return image.shape[0], image.shape[1]


_FILTERS: Final = {
    "nearest-exact": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "area": Image.Resampling.BOX,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "bislerp": Image.Resampling.BICUBIC,
}


def _resize(images: _Array, width: int, height: int, method: str, crop: str) -> _Array:
    """``comfy.utils.common_upscale``: optional centre crop to the aspect, then resample."""
    b, h, w, _ = images.shape
    width, height = max(1, width), max(1, height)
    if crop == "center":
        old_aspect, new_aspect = w / h, width / height
        x = y = 0
        if old_aspect > new_aspect:
            x = round((w - w * (new_aspect / old_aspect)) / 2)
        elif old_aspect < new_aspect:
            y = round((h - h * (old_aspect / new_aspect)) / 2)
        images = images[:, y : h - y, x : w - x, :]
    if images.shape[1:3] == (height, width):
        return images.copy()
    resample = _FILTERS.get(method, Image.Resampling.BILINEAR)
    channels = images.shape[3]
    out = np.empty((b, height, width, channels), dtype=np.float32)
    for k in range(b):
        for c in range(channels):
            plane = Image.fromarray(images[k, :, :, c].astype(np.float32, copy=False), mode="F")
            out[k, :, :, c] = np.asarray(plane.resize((width, height), resample))
    return out


def scaled_size(w: int, h: int, width: int, height: int) -> tuple[int, int]:
    """ImageScale: a zero side keeps the aspect ratio; both zero keep the size."""
    if width == 0 and height == 0:
        return w, h
    if width == 0:
        return max(1, round(w * height / h)), height
    if height == 0:
        return width, max(1, round(h * width / w))
    return width, height


def _gaussian(radius: int, sigma: float) -> _Array:
    """One axis of ComfyUI's ``gaussian_kernel``: ``2r+1`` taps over ``linspace(-1, 1)``
    (so ``sigma`` is relative to the radius); the 2-D kernel is the outer product."""
    x = np.linspace(-1.0, 1.0, 2 * radius + 1, dtype=np.float32)
    k = np.exp(-(x * x) / (2.0 * sigma * sigma))
    kernel: _Array = (k / k.sum()).astype(np.float32, copy=False)
    return kernel


def _blur(images: _Array, radius: int, sigma: float) -> _Array:
    """Separable Gaussian blur with reflect padding (ImageBlur's kernel, size ``2r+1``).

    An image uniform in each channel is its own blur: returned as is (the captured slow
    workflows blur flat 4x1024x1024 batches, which would otherwise cost seconds of CPU)."""
    if radius == 0 or images.size == 0 or _uniform(images):
        return images
    if not np.ptp(images, axis=(1, 2)).any():
        return images
    kernel = _gaussian(radius, sigma)
    out = images
    for axis in (1, 2):
        size = out.shape[axis]
        pad = [(0, 0)] * out.ndim
        pad[axis] = (radius, radius)
        padded = np.pad(out, pad, mode="reflect")
        acc = np.zeros_like(out)
        tmp = np.empty_like(out)
        for i, weight in enumerate(kernel):
            window = padded[:, i : i + size] if axis == 1 else padded[:, :, i : i + size]
            np.multiply(window, weight, out=tmp)
            acc += tmp
        out = acc
    return out


def _check_reflect_pad(images: _Array, radius: int) -> None:
    """ImageBlur and ImageSharpen pad by the radius with torch's reflect padding, which
    needs the pad smaller than each side: ComfyUI fails the node otherwise (width first)."""
    b, h, w, c = images.shape
    for argument, dim, side in ((4, 3, w), (6, 2, h)):
        if radius >= side:
            raise NodeFailure(
                "RuntimeError",
                f"Argument #{argument}: Padding size should be less than the corresponding "
                f"input dimension, but got: padding ({radius}, {radius}) at dimension {dim} "
                f"of input [{b}, {c}, {h}, {w}]",
            )


def _split_prefix(prefix: str) -> tuple[str, str]:
    folder, name = posixpath.split(prefix)
    return posixpath.normpath(folder) if folder else "", name


def _to_batch(array: _Array, size: int) -> _Array:
    """``comfy.utils.repeat_to_batch_size``: the first ``size`` items, the batch repeated
    (cyclically) when it has fewer."""
    if array.shape[0] > size:
        return array[:size]
    if array.shape[0] < size:
        reps = (math.ceil(size / array.shape[0]),) + (1,) * (array.ndim - 1)
        return np.tile(array, reps)[:size]
    return array


def _image(value: object) -> _Array:
    if not isinstance(value, np.ndarray):
        raise NodeFailure("AttributeError", f"'{type(value).__name__}' has no attribute 'shape'")
    return value


# ------------------------------------------------------------------------------ images


def _empty_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    color = int(i["color"])
    rgb = np.array(
        [(color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF], dtype=np.float32
    ) / np.float32(255.0)
    shape = (int(i["batch_size"]), int(i["height"]), int(i["width"]), 3)
    # A read-only broadcast view: no memory, and known uniform (see _uniform).
    return (np.broadcast_to(rgb, shape),), None


def _open_input(name: str, ctx: NodeContext) -> Image.Image:
    data = ctx.read_input(name)
    try:
        if data is None:
            raise UnidentifiedImageError(name)
        img = Image.open(io.BytesIO(data))
        img.load()
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise NodeFailure(
            "PIL.UnidentifiedImageError",
            f"cannot identify image file '/srv/comfyui/input/{name}'\n",
        ) from exc
    return img


_SINGLE_IMAGE_FORMATS: Final = frozenset({"MPO"})
"""nodes.LoadImage's ``excluded_formats``: a file of several frames in one of these formats
gives its first frame only, not a batch (an MPO is a phone photo with its preview or depth
frames, not an animation)."""


def _load_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """nodes.LoadImage: every frame of the input's size, RGB, as a batch (the first frame
    only for an MPO); mask = 1 - alpha."""
    img = _open_input(str(i["image"]), ctx)
    images: list[_Array] = []
    masks: list[_Array] = []
    size: tuple[int, int] | None = None
    for frame in ImageSequence.Iterator(img):
        frame = ImageOps.exif_transpose(frame) or frame
        if frame.mode == "I":
            frame = frame.point(lambda v: v * (1 / 255))
        rgb = frame.convert("RGB")
        if size is None:
            size = rgb.size
        if rgb.size != size:
            continue
        images.append(_from_pil(rgb))
        if "A" in frame.getbands():
            masks.append(1.0 - _from_pil(frame.getchannel("A")))
        elif frame.mode == "P" and "transparency" in frame.info:
            masks.append(1.0 - _from_pil(frame.convert("RGBA").getchannel("A")))
        else:
            masks.append(np.zeros((64, 64), dtype=np.float32))
    if img.format in _SINGLE_IMAGE_FORMATS:  # output_images[0]: no torch.cat at all
        images, masks = images[:1], masks[:1]
    if len({m.shape for m in masks}) > 1:  # torch.cat of masks of different sizes
        raise NodeFailure("RuntimeError", "Sizes of tensors must match except in dimension 0")
    return (
        np.stack(images).astype(np.float32, copy=False),
        np.stack(masks).astype(np.float32, copy=False),
    ), None


def _load_image_mask(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """nodes.LoadImageMask: one channel as the mask (alpha inverted)."""
    img = _open_input(str(i["image"]), ctx)
    frame = ImageOps.exif_transpose(img) or img
    channel = str(i["channel"])[0].upper()
    if frame.getbands() != ("R", "G", "B", "A"):
        if frame.mode == "I":
            frame = frame.point(lambda v: v * (1 / 255))
        frame = frame.convert("RGBA")
    mask = _from_pil(frame.getchannel(channel))
    if channel == "A":
        mask = 1.0 - mask
    return (mask[None].astype(np.float32, copy=False),), None


def _invert(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return ((1.0 - _image(i["image"])).astype(np.float32, copy=False),), None


def _image_scale(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    w, h = scaled_size(src.shape[2], src.shape[1], int(i["width"]), int(i["height"]))
    return (_resize(src, w, h, str(i["upscale_method"]), str(i["crop"])),), None


def _image_scale_by(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    s = float(i["scale_by"])
    w, h = round(src.shape[2] * s), round(src.shape[1] * s)
    return (_resize(src, w, h, str(i["upscale_method"]), "disabled"),), None


def _scale_to_total(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    total = float(i["megapixels"]) * 1024 * 1024
    s = math.sqrt(total / (src.shape[2] * src.shape[1]))
    w, h = round(src.shape[2] * s), round(src.shape[1] * s)
    return (_resize(src, w, h, str(i["upscale_method"]), "disabled"),), None


def _image_blur(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    radius = int(i["blur_radius"])
    if radius == 0:
        return (src,), None
    _check_reflect_pad(src, radius)
    return (_blur(src, radius, float(i["sigma"])).astype(np.float32, copy=False),), None


def _image_sharpen(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """ImageSharpen's kernel ``-a*G`` with ``1 + a`` added at the centre (a = 10 alpha)."""
    src = _image(i["image"])
    radius = int(i["sharpen_radius"])
    if radius == 0:
        return (src,), None
    _check_reflect_pad(src, radius)
    a = float(i["alpha"]) * 10.0
    out = (1.0 + a) * src - a * _blur(src, radius, float(i["sigma"]))
    return (np.clip(out, 0.0, 1.0).astype(np.float32, copy=False),), None


def _add_noise(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    rng = np.random.default_rng(int(i["seed"]))
    noise = rng.standard_normal(src.shape, dtype=np.float32)
    return (
        np.clip(src + float(i["strength"]) * noise, 0.0, 1.0).astype(np.float32, copy=False),
    ), None


def _image_flip(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    axis = 1 if str(i["flip_method"]).startswith("x") else 2
    return (np.flip(_image(i["image"]), axis=axis).copy(),), None


def _image_rotate(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    rotation = str(i["rotation"])
    k = {"90": 1, "180": 2, "270": 3}.get(rotation.split(" ")[0], 0)
    return (np.rot90(_image(i["image"]), k=k, axes=(2, 1)).copy(),), None


def _image_crop(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    x = min(int(i["x"]), src.shape[2] - 1)
    y = min(int(i["y"]), src.shape[1] - 1)
    return (src[:, y : y + int(i["height"]), x : x + int(i["width"]), :].copy(),), None


def _image_batch(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    a, b = _image(i["image1"]), _image(i["image2"])
    if a.shape[1:] != b.shape[1:]:
        b = _resize(b, a.shape[2], a.shape[1], "bilinear", "center")
    return (np.concatenate([a, b]),), None


def _repeat_batch(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (np.tile(_image(i["image"]), (int(i["amount"]), 1, 1, 1)),), None


def _from_batch(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    start = min(src.shape[0] - 1, int(i["batch_index"]))
    length = min(src.shape[0] - start, int(i["length"]))
    return (src[start : start + length].copy(),), None


def _pad_for_outpaint(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    left, top, right, bottom = (int(i[k]) for k in ("left", "top", "right", "bottom"))
    feathering = int(i["feathering"])
    b, h, w, c = src.shape
    out = np.full((b, h + top + bottom, w + left + right, c), 0.5, dtype=np.float32)
    out[:, top : top + h, left : left + w, :] = src
    mask = np.ones((h + top + bottom, w + left + right), dtype=np.float32)
    t = np.zeros((h, w), dtype=np.float32)
    if feathering > 0 and feathering * 2 < h and feathering * 2 < w:
        rows = np.arange(h)[:, None]
        cols = np.arange(w)[None, :]
        dt = rows if top else np.full_like(rows, h)
        db = h - rows if bottom else np.full_like(rows, h)
        dl = cols if left else np.full_like(cols, w)
        dr = w - cols if right else np.full_like(cols, w)
        dist = np.minimum(np.minimum(dt, db), np.minimum(dl, dr))
        v = (feathering - dist) / feathering
        t = np.where(dist < feathering, v * v, 0.0).astype(np.float32, copy=False)
    mask[top : top + h, left : left + w] = t
    return (out, mask[None]), None


def _blend_mode(a: _Array, b: _Array, mode: str) -> _Array:
    if mode == "multiply":
        return a * b
    if mode == "screen":
        return 1 - (1 - a) * (1 - b)
    if mode == "overlay":
        return np.where(a <= 0.5, 2 * a * b, 1 - 2 * (1 - a) * (1 - b))
    if mode == "soft_light":
        g = np.where(a <= 0.25, ((16 * a - 12) * a + 4) * a, np.sqrt(a))
        return np.where(b <= 0.5, a - (1 - 2 * b) * a * (1 - a), a + (2 * b - 1) * (g - a))
    if mode == "difference":
        return a - b
    return b


def _image_blend(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """image2 is resized to image1's size but keeps its batch; the batches then broadcast
    as torch's do: equal, or one of them 1 (the result has the larger), else the node fails.
    """
    a, b = _image(i["image1"]), _image(i["image2"])
    if a.shape != b.shape:
        b = _resize(b, a.shape[2], a.shape[1], "bicubic", "center")
    mode = str(i["blend_mode"])
    if a.shape[0] != b.shape[0] and 1 not in (a.shape[0], b.shape[0]):
        # The first product of the two: soft_light's multiplies image2 by image1.
        first, second = (b, a) if mode == "soft_light" else (a, b)
        raise NodeFailure(
            "RuntimeError",
            f"The size of tensor a ({first.shape[0]}) must match the size of tensor b "
            f"({second.shape[0]}) at non-singleton dimension 0",
        )
    f = float(i["blend_factor"])
    out = a * (1 - f) + _blend_mode(a, b, mode) * f
    return (np.clip(out, 0.0, 1.0).astype(np.float32, copy=False),), None


def _image_quantize(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    dither = Image.Dither.FLOYDSTEINBERG if i["dither"] == "floyd-steinberg" else Image.Dither.NONE
    out = np.empty_like(src)
    for k in range(src.shape[0]):
        img = _pil(src[k])
        quantized = img.quantize(colors=int(i["colors"]), dither=dither).convert("RGB")
        out[k] = _from_pil(quantized)
    return (out,), None


def _get_image_size(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    b, h, w = int(src.shape[0]), int(src.shape[1]), int(src.shape[2])
    ctx.send_text(node_id, f"width: {w}, height: {h}\n batch size: {b}")
    return (w, h, b), None


# ------------------------------------------------------------------------------ masks


def _solid_mask(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    shape = (1, int(i["height"]), int(i["width"]))
    return (np.full(shape, float(i["value"]), dtype=np.float32),), None


def _invert_mask(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return ((1.0 - _image(i["mask"])).astype(np.float32, copy=False),), None


def _mask_to_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    mask = _image(i["mask"])
    mask = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
    return (np.repeat(mask[..., None], 3, axis=3).astype(np.float32, copy=False),), None


def _image_to_mask(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["image"])
    index = ["red", "green", "blue", "alpha"].index(str(i["channel"]))
    if index >= src.shape[3]:
        raise NodeFailure("IndexError", "index 3 is out of bounds for dimension 3 with size 3")
    return (src[:, :, :, index].copy(),), None


def _composite(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """ImageCompositeMasked: paste ``source`` at (x, y), weighted by ``mask``."""
    dest = _image(i["destination"]).copy()
    source = _image(i["source"])
    if i.get("resize_source"):
        source = _resize(source, dest.shape[2], dest.shape[1], "bilinear", "disabled")
    # ComfyUI repeats the source (and the mask) to the destination's batch size.
    source = _to_batch(source, dest.shape[0])
    x, y = max(0, int(i["x"])), max(0, int(i["y"]))
    h = max(0, min(source.shape[1], dest.shape[1] - y))
    w = max(0, min(source.shape[2], dest.shape[2] - x))
    mask = i.get("mask")
    if isinstance(mask, np.ndarray):
        m = mask.reshape((-1, mask.shape[-2], mask.shape[-1]))
        if m.shape[1:] != source.shape[1:3]:
            m = _resize(m[..., None], source.shape[2], source.shape[1], "bilinear", "disabled")[
                ..., 0
            ]
        weight = _to_batch(m, dest.shape[0])[:, :h, :w, None]
    else:
        weight = np.ones((1, h, w, 1), dtype=np.float32)
    region = dest[:, y : y + h, x : x + w, :]
    src = source[:, :h, :w, : dest.shape[3]]
    dest[:, y : y + h, x : x + w, :] = weight * src + (1 - weight) * region
    return (dest,), None


# ------------------------------------------------------------------------------ latents


def _empty_latent(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    shape = (int(i["batch_size"]), 4, int(i["height"]) // 8, int(i["width"]) // 8)
    return ({"samples": np.zeros(shape, dtype=np.float32)},), None


def _samples(value: object) -> _Array:
    if isinstance(value, dict) and isinstance(value.get("samples"), np.ndarray):
        samples: _Array = value["samples"]
        return samples
    raise NodeFailure("KeyError", "'samples'")


def _latent_math(op: Callable[[_Array, _Array], _Array]) -> _NodeFn:
    def run(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
        a, b = _samples(i["samples1"]), _samples(i["samples2"])
        if a.shape != b.shape:
            b = np.resize(b, a.shape)
        return ({"samples": op(a, b).astype(np.float32, copy=False)},), None

    return run


def _latent_multiply(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    s = _samples(i["samples"])
    return ({"samples": (s * float(i["multiplier"])).astype(np.float32, copy=False)},), None


def _latent_batch(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    a, b = _samples(i["samples1"]), _samples(i["samples2"])
    if a.shape[1:] != b.shape[1:]:
        b = np.resize(b, (b.shape[0], *a.shape[1:]))
    return ({"samples": np.concatenate([a, b])},), None


def _latent_upscale(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    s = _samples(i["samples"])
    w, h = scaled_size(s.shape[3] * 8, s.shape[2] * 8, int(i["width"]), int(i["height"]))
    return ({"samples": _resize_latent(s, max(1, w // 8), max(1, h // 8))},), None


def _latent_upscale_by(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    s = _samples(i["samples"])
    f = float(i["scale_by"])
    return ({"samples": _resize_latent(s, round(s.shape[3] * f), round(s.shape[2] * f))},), None


def _resize_latent(s: _Array, width: int, height: int) -> _Array:
    rows = (np.arange(max(1, height)) * s.shape[2] // max(1, height)).clip(0, s.shape[2] - 1)
    cols = (np.arange(max(1, width)) * s.shape[3] // max(1, width)).clip(0, s.shape[3] - 1)
    return s[:, :, rows][:, :, :, cols].astype(np.float32, copy=False)


# ------------------------------------------------------------------------------ primitives


def _passthrough(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (i["value"],), None


def _concatenate(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (f"{i['string_a']}{i['delimiter']}{i['string_b']}",), None


def _preview_any(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    value = i.get("source")
    if isinstance(value, str):
        text = value
    elif isinstance(value, (int, float, bool)) or value is None:
        text = str(value)
    else:
        try:
            text = json.dumps(value, indent=4)
        except (TypeError, ValueError):
            text = "source exists, but could not be serialized."
    return (), {"text": [text]}


# ------------------------------------------------------------------------------ outputs


def _png_text(ctx: NodeContext) -> dict[str, str]:
    """SaveImage's metadata: ``prompt``, then each ``extra_pnginfo`` key (``workflow``...)."""
    text = {"prompt": json.dumps(ctx.prompt)}
    for key, value in (ctx.extra_pnginfo or {}).items():
        text[str(key)] = json.dumps(value)
    return text


def _save_images(
    kind: str, prefix: str, images: object, ctx: NodeContext, compress_level: int
) -> list[dict[str, str]]:
    src = _image(images)
    subfolder, name = _split_prefix(prefix)
    text = _png_text(ctx)
    files = []
    for k in range(src.shape[0]):
        png = encode_png(src[k], text=text, compress_level=compress_level)
        filename = ctx.save_file(kind, subfolder, name, "png", png)
        files.append({"filename": filename, "subfolder": subfolder, "type": kind})
    return files


def _save_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    prefix = str(i["filename_prefix"])
    return (), {"images": _save_images("output", prefix, i["images"], ctx, 4)}


def _preview_image(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    return (), {"images": _save_images("temp", ctx.temp_prefix(), i["images"], ctx, 1)}


def _save_image_websocket(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["images"])
    for k in range(src.shape[0]):
        # Full size, like the real node: a noisy 1024x1024 image makes a frame over 1 MiB.
        ctx.send_image(node_id, encode_png(src[k], compress_level=1), k, src.shape[0])
    return (), None


def _save_glb(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    subfolder, name = _split_prefix(str(i["filename_prefix"]))
    mesh = i["mesh"]
    digest = mesh.digest if isinstance(mesh, Token) else d
    filename = ctx.save_file("output", subfolder, name, "glb", write_glb(digest))
    return (), {"3d": [{"filename": filename, "subfolder": subfolder, "type": "output"}]}


# ------------------------------------------------------------------------------ model nodes


def _depth_anything(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """A depth map at ``resolution`` wide: the input's blurred luminance stands in."""
    src = _image(i["image"])
    res = int(i["resolution"])
    h = max(1, round(res * src.shape[1] / max(1, src.shape[2])))
    gray = _resize(src[..., :3].mean(axis=3, keepdims=True), res, h, "bilinear", "disabled")
    np.clip(gray, 0.0, 1.0, out=gray)
    return (np.repeat(gray, 3, axis=3),), None


def _ip2p(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    src = _image(i["pixels"])
    shape = (src.shape[0], 16, src.shape[1] // 8, src.shape[2] // 8)
    latent = {"samples": np.zeros(shape, dtype=np.float32)}
    return (Token("CONDITIONING", _slot(d, 0)), Token("CONDITIONING", _slot(d, 1)), latent), None


def _ksampler(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    """A denoised latent of the input's shape (its values are not used downstream: the
    decoder's stand-in draws a fixed picture of the right size)."""
    return ({"samples": np.zeros_like(_samples(i["latent_image"]))},), None


def _vae_decode(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    s = _samples(i["samples"])
    if s.ndim != 4:
        raise NodeFailure("RuntimeError", f"expected a 4-D image latent, got shape {s.shape}")
    return (_pattern(s.shape[0], s.shape[2] * 8, s.shape[3] * 8),), None


def _hunyuan_latent(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
    shape = (int(i["batch_size"]), 64, int(i["resolution"]))
    return ({"samples": np.zeros(shape, dtype=np.float32)},), None


_PRIMITIVE_DEFAULTS: Final[Mapping[str, object]] = {
    "INT": 0,
    "FLOAT": 0.0,
    "STRING": "",
    "BOOLEAN": False,
}


def _stand_in(outputs: list[Any]) -> _NodeFn:
    """A model node (or any class without its own code): fresh values of its declared output
    types, images sized by its ``width``/``height`` inputs or its first image or latent."""

    def run(node_id: str, i: dict[str, Any], ctx: NodeContext, d: bytes) -> _Result:
        w, h, b = 512, 512, 1
        if isinstance(i.get("width"), int) and isinstance(i.get("height"), int):
            w, h = int(i["width"]), int(i["height"])
            b = int(i["batch_size"]) if isinstance(i.get("batch_size"), int) else 1
        else:
            for value in i.values():
                if isinstance(value, np.ndarray) and value.ndim == 4:
                    b, h, w = value.shape[:3]
                    break
                if isinstance(value, dict) and isinstance(value.get("samples"), np.ndarray):
                    s = value["samples"]
                    if s.ndim == 4:
                        b, h, w = s.shape[0], s.shape[2] * 8, s.shape[3] * 8
                        break
        values: list[object] = []
        for n, kind in enumerate(outputs):
            if kind == "IMAGE":
                values.append(_pattern(b, h, w))
            elif kind == "MASK":
                values.append(np.zeros((b, h, w), dtype=np.float32))
            elif kind == "LATENT":
                shape = (b, 4, max(1, h // 8), max(1, w // 8))
                values.append({"samples": np.zeros(shape, dtype=np.float32)})
            elif isinstance(kind, str) and kind in _PRIMITIVE_DEFAULTS:
                values.append(_PRIMITIVE_DEFAULTS[kind])
            else:
                values.append(Token(str(kind), _slot(d, n)))
        return tuple(values), None

    return run


NODE_FUNCTIONS: Final[dict[str, _NodeFn]] = {
    "EmptyImage": _empty_image,
    "LoadImage": _load_image,
    "LoadImageMask": _load_image_mask,
    "ImageInvert": _invert,
    "ImageScale": _image_scale,
    "ImageScaleBy": _image_scale_by,
    "ImageScaleToTotalPixels": _scale_to_total,
    "ImageBlur": _image_blur,
    "ImageSharpen": _image_sharpen,
    "ImageAddNoise": _add_noise,
    "ImageFlip": _image_flip,
    "ImageRotate": _image_rotate,
    "ImageCrop": _image_crop,
    "ImageBatch": _image_batch,
    "RepeatImageBatch": _repeat_batch,
    "ImageFromBatch": _from_batch,
    "ImagePadForOutpaint": _pad_for_outpaint,
    "ImageBlend": _image_blend,
    "ImageQuantize": _image_quantize,
    "GetImageSize": _get_image_size,
    "SolidMask": _solid_mask,
    "InvertMask": _invert_mask,
    "MaskToImage": _mask_to_image,
    "ImageToMask": _image_to_mask,
    "ImageCompositeMasked": _composite,
    "EmptyLatentImage": _empty_latent,
    "LatentAdd": _latent_math(lambda a, b: a + b),
    "LatentSubtract": _latent_math(lambda a, b: a - b),
    "LatentMultiply": _latent_multiply,
    "LatentBatch": _latent_batch,
    "LatentUpscale": _latent_upscale,
    "LatentUpscaleBy": _latent_upscale_by,
    "PrimitiveInt": _passthrough,
    "PrimitiveFloat": _passthrough,
    "PrimitiveString": _passthrough,
    "PrimitiveStringMultiline": _passthrough,
    "PrimitiveBoolean": _passthrough,
    "StringConcatenate": _concatenate,
    "PreviewAny": _preview_any,
    "SaveImage": _save_image,
    "PreviewImage": _preview_image,
    "SaveImageWebsocket": _save_image_websocket,
    "SaveGLB": _save_glb,
}

EXECUTABLE_CLASSES: Final[frozenset[str]] = frozenset(NODE_FUNCTIONS)
"""Classes that run for real (the others, model nodes among them, are stood in for)."""

#: Model nodes with a stand-in that knows their output shapes better than the generic one.
_MODEL_NODES: Final[dict[str, _NodeFn]] = {
    "DepthAnythingV2Preprocessor": _depth_anything,
    "InstructPixToPixConditioning": _ip2p,
    "KSampler": _ksampler,
    "KSamplerAdvanced": _ksampler,
    "VAEDecode": _vae_decode,
    "EmptyLatentHunyuan3Dv2": _hunyuan_latent,
}


def node_function(class_type: str, outputs: list[Any]) -> _NodeFn:
    """The implementation of ``class_type`` (a stand-in if it needs a model or has none)."""
    fn = NODE_FUNCTIONS.get(class_type) or _MODEL_NODES.get(class_type)
    return fn if fn is not None else _stand_in(outputs)
