"""The node catalogue of the ComfyUI simulator: the real server's ``GET /object_info``.

``data/object_info.json.gz`` is the answer of a real ComfyUI 0.3.64 (CPU, no model files:
``../shared/protocols/captures/object_info_full.json``, 478 classes), stored compact and
gzipped. The simulator validates prompts against it and serves it as it is, so every shape
is the real one (``["IMAGE"]``, not ``["IMAGE", {}]``; V3 nodes with ``COMBO`` inputs,
``display_name`` null, ``deprecated``/``experimental``/``api_node``...).

Two things differ from that capture, because the simulator plays a RunComfy machine set up
for the CONJURE workflow rather than a bare install:

- the loaders' file lists name the model files the CONJURE workflow uses
  (:data:`MODEL_FILES`; the capture's lists are empty since that server had no models);
- ``DepthAnythingV2Preprocessor`` (the ``comfyui_controlnet_aux`` custom node the workflow
  uses) is added, in the shape a V1 custom node has.

That is the catalogue of a ``wv-conjure-flux-mesh-1`` machine. A workflow version is a machine
image, so a machine of another version has another catalogue (:func:`image_for`):
``wv-core-nodes-1`` ("Model-free core nodes") is the bare install of the capture, ComfyUI's
own nodes (``python_module`` ``nodes``, ``comfy_extras.*``, ``comfy_api_nodes.*`` and the
bundled ``custom_nodes.websocket_image_save``) with no model files. A prompt naming a class
its machine lacks is refused as the real server refuses it (400 ``invalid_prompt``).

``LoadImage``'s and ``LoadImageMask``'s combo lists are the simulator's current input folder,
so they are filled in at request time (see :func:`object_info`).
"""

from __future__ import annotations

import copy
import functools
import gzip
import importlib.resources
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

import attrs
import msgspec

from conjure_actors.domain.workflow import Catalog, catalog_from_object_info

__all__ = [
    "CONJURE_IMAGE",
    "CORE_IMAGE",
    "CORE_OBJECT_INFO",
    "LOADER_FOLDERS",
    "MODEL_FILES",
    "OBJECT_INFO",
    "SAMPLERS",
    "SCHEDULERS",
    "MachineImage",
    "image_for",
    "node_catalog",
    "object_info",
    "output_nodes",
]

_JSON = dict[str, Any]

#: The model files a simulated CONJURE machine has, by ComfyUI model folder.
MODEL_FILES: Final[Mapping[str, tuple[str, ...]]] = {
    "checkpoints": ("hunyuan3d-dit-v2.safetensors", "svd_xt.safetensors"),
    "diffusion_models": ("flux1-depth-dev.safetensors", "flux1-dev.safetensors"),
    "text_encoders": (
        "clip_l.safetensors",
        "t5xxl_fp16.safetensors",
        "t5xxl_fp8_e4m3fn.safetensors",
    ),
    "vae": ("ae.safetensors",),
}

#: Which loader input lists which model folder (``/models/{folder}`` answers the same list).
LOADER_FOLDERS: Final[Mapping[tuple[str, str], str]] = {
    ("CheckpointLoaderSimple", "ckpt_name"): "checkpoints",
    ("ImageOnlyCheckpointLoader", "ckpt_name"): "checkpoints",
    ("unCLIPCheckpointLoader", "ckpt_name"): "checkpoints",
    ("UNETLoader", "unet_name"): "diffusion_models",
    ("DualCLIPLoader", "clip_name1"): "text_encoders",
    ("DualCLIPLoader", "clip_name2"): "text_encoders",
    ("CLIPLoader", "clip_name"): "text_encoders",
    ("VAELoader", "vae_name"): "vae",
}

_DEPTH_ANYTHING: Final[_JSON] = {
    "input": {
        "required": {
            "image": ["IMAGE"],
            "ckpt_name": [
                [
                    "depth_anything_v2_vitg.pth",
                    "depth_anything_v2_vitl.pth",
                    "depth_anything_v2_vitb.pth",
                    "depth_anything_v2_vits.pth",
                ],
                {"default": "depth_anything_v2_vitl.pth"},
            ],
            "resolution": ["INT", {"default": 512, "min": 64, "max": 16384, "step": 64}],
        }
    },
    "input_order": {"required": ["image", "ckpt_name", "resolution"]},
    "output": ["IMAGE"],
    "output_is_list": [False],
    "output_name": ["IMAGE"],
    "name": "DepthAnythingV2Preprocessor",
    "display_name": "Depth Anything V2 - Relative",
    "description": "",
    "python_module": "custom_nodes.comfyui_controlnet_aux",
    "category": "ControlNet Preprocessors/Normal and Depth Estimators",
    "output_node": False,
}


def _capture() -> dict[str, _JSON]:
    raw = importlib.resources.files("conjure_actors.sim").joinpath("data/object_info.json.gz")
    catalog: dict[str, _JSON] = msgspec.json.decode(gzip.decompress(raw.read_bytes()))
    return catalog


def _load() -> dict[str, _JSON]:
    catalog = _capture()
    for (cls, name), folder in LOADER_FOLDERS.items():
        spec = catalog[cls]["input"]["required"][name]
        # The real list holds the folder's files, then any built-in choices (VAELoader's
        # "pixel_space"); keep those after ours.
        spec[0] = [*MODEL_FILES[folder], *(f for f in spec[0] if f not in MODEL_FILES[folder])]
    catalog["DepthAnythingV2Preprocessor"] = _DEPTH_ANYTHING
    return catalog


OBJECT_INFO: Final[dict[str, _JSON]] = _load()

#: The catalogue of a bare ComfyUI with no model files: the capture as it is.
CORE_OBJECT_INFO: Final[dict[str, _JSON]] = _capture()


@attrs.frozen
class MachineImage:
    """What a machine of one workflow version has: its node classes and its model files."""

    name: str
    object_info: Mapping[str, _JSON] = attrs.field(repr=False)
    model_files: Mapping[str, tuple[str, ...]] = attrs.field(repr=False)


#: A machine set up for the CONJURE workflow (also the standalone ComfyUI's).
CONJURE_IMAGE: Final = MachineImage("CONJURE FLUX depth + mesh", OBJECT_INFO, MODEL_FILES)
#: A bare ComfyUI: core nodes only, empty model folders.
CORE_IMAGE: Final = MachineImage(
    "core nodes", CORE_OBJECT_INFO, {folder: () for folder in MODEL_FILES}
)

_IMAGES: Final[Mapping[str, MachineImage]] = {
    "wv-conjure-flux-mesh-1": CONJURE_IMAGE,
    "wv-core-nodes-1": CORE_IMAGE,
}


def image_for(workflow_version: str | None) -> MachineImage:
    """The machine image of a workflow version. A version the simulated account does not
    list (a unit test's sim launching any version) gets the CONJURE one."""
    if workflow_version is None:
        return CONJURE_IMAGE
    return _IMAGES.get(workflow_version, CONJURE_IMAGE)


SAMPLERS: Final[list[str]] = list(OBJECT_INFO["KSampler"]["input"]["required"]["sampler_name"][0])
SCHEDULERS: Final[list[str]] = list(OBJECT_INFO["KSampler"]["input"]["required"]["scheduler"][0])

_INPUT_LISTS: Final = (("LoadImage", "image"), ("LoadImageMask", "image"))


@functools.cache
def output_nodes() -> frozenset[str]:
    """Class names whose ``output_node`` is true (they decide what a prompt runs)."""
    return frozenset(name for name, info in OBJECT_INFO.items() if info["output_node"])


def object_info(
    input_files: Iterable[str],
    only: str | None = None,
    *,
    catalog: Mapping[str, _JSON] = OBJECT_INFO,
) -> _JSON:
    """The ``/object_info`` body (or ``/object_info/{only}``) of ``catalog`` (a machine
    image's), with the input folder's files.

    Entries are shared with ``catalog`` (only the ones with a file list are copied): the
    caller serialises the answer and must not change it.
    """
    names = [only] if only is not None else list(catalog)
    files = sorted(input_files)
    out: _JSON = {}
    for name in names:
        info = catalog.get(name)
        if info is None:
            continue
        for cls, field in _INPUT_LISTS:
            if name == cls:
                info = copy.deepcopy(info)
                info["input"]["required"][field][0] = files
        out[name] = info
    return out


@functools.cache
def node_catalog() -> Catalog:
    """The parsed catalog of :func:`object_info` with an empty input folder (what a client
    validating against this simulator sees), built once per process (~480 classes) and
    read-only."""
    return MappingProxyType(catalog_from_object_info(object_info(())))
