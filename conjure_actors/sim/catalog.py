"""The node catalogue of the ComfyUI simulator, in the exact shape ``GET /object_info`` serves.

Two groups of classes:

- model-free core nodes used by the captured workflows (``EmptyImage``, ``ImageInvert``,
  ``SaveImage``, ``LoadImage``, ``ImageScale``, ``ImageBlur``, ``GetImageSize``,
  ``PreviewImage``, ``SaveImageWebsocket``, ``ImageAddNoise`` ...). ``EmptyImage``,
  ``ImageBlur`` (a "V3" node: ``display_name`` null plus ``deprecated``/``experimental``/
  ``api_node``), ``LoadImage`` and ``SaveImage`` are copied from the captured answers;
- stand-ins for every class of the CONJURE workflow (FLUX depth + Hunyuan3D mesh), with the
  input names, types, ranges and combo lists those nodes have, and the model file names the
  bundled workflow uses.

``LoadImage``'s combo list is the simulator's current input folder, so it is filled in at
request time (see :func:`object_info`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any, Final

__all__ = ["OBJECT_INFO", "object_info", "output_nodes"]

_JSON = dict[str, Any]

_HIDDEN_PNG: Final[_JSON] = {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}
UPSCALE_METHODS: Final = ["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]
SAMPLERS: Final = [
    "euler",
    "euler_cfg_pp",
    "euler_ancestral",
    "heun",
    "dpm_2",
    "dpm_2_ancestral",
    "lms",
    "dpm_fast",
    "dpm_adaptive",
    "dpmpp_2s_ancestral",
    "dpmpp_sde",
    "dpmpp_2m",
    "dpmpp_2m_sde",
    "dpmpp_3m_sde",
    "ddpm",
    "lcm",
    "ipndm",
    "deis",
    "res_multistep",
    "gradient_estimation",
    "uni_pc",
    "uni_pc_bh2",
    "ddim",
]
SCHEDULERS: Final = [
    "simple",
    "sgm_uniform",
    "karras",
    "exponential",
    "ddim_uniform",
    "beta",
    "normal",
    "linear_quadratic",
    "kl_optimal",
]
MAX_SEED: Final = 0xFFFFFFFFFFFFFFFF


def _node(
    name: str,
    *,
    required: _JSON,
    optional: _JSON | None = None,
    hidden: _JSON | None = None,
    output: list[str],
    output_name: list[str] | None = None,
    display_name: str | None = None,
    description: str = "",
    python_module: str = "nodes",
    category: str = "image",
    output_node: bool = False,
) -> _JSON:
    inputs: _JSON = {"required": required}
    order: _JSON = {"required": list(required)}
    if optional:
        inputs["optional"] = optional
        order["optional"] = list(optional)
    if hidden:
        inputs["hidden"] = hidden
        order["hidden"] = list(hidden)
    return {
        "input": inputs,
        "input_order": order,
        "output": output,
        "output_is_list": [False] * len(output),
        "output_name": output_name if output_name is not None else list(output),
        "name": name,
        "display_name": display_name if display_name is not None else name,
        "description": description,
        "python_module": python_module,
        "category": category,
        "output_node": output_node,
    }


def _int(default: int, lo: int, hi: int, step: int | None = 1, **extra: Any) -> list[Any]:
    spec: _JSON = {"default": default, "min": lo, "max": hi}
    if step is not None:
        spec["step"] = step
    spec.update(extra)
    return ["INT", spec]


def _float(default: float, lo: float, hi: float, step: float, **extra: Any) -> list[Any]:
    spec: _JSON = {"default": default, "min": lo, "max": hi, "step": step}
    spec.update(extra)
    return ["FLOAT", spec]


_IMAGE: Final = ["IMAGE", {}]

# Copied from captures/object_info_*.json (EmptyImage, ImageBlur, LoadImage, SaveImage).
_CAPTURED: Final[_JSON] = {
    "EmptyImage": _node(
        "EmptyImage",
        required={
            "width": _int(512, 1, 16384),
            "height": _int(512, 1, 16384),
            "batch_size": _int(1, 1, 4096, step=None),
            "color": _int(0, 0, 16777215, display="color"),
        },
        output=["IMAGE"],
    ),
    "ImageBlur": {
        **_node(
            "ImageBlur",
            required={
                "image": _IMAGE,
                "blur_radius": _int(1, 1, 31),
                "sigma": _float(1.0, 0.1, 10.0, 0.1),
            },
            output=["IMAGE"],
            python_module="comfy_extras.nodes_post_processing",
            category="image/postprocessing",
        ),
        "output_tooltips": [None],
        "display_name": None,
        "deprecated": False,
        "experimental": False,
        "api_node": False,
    },
    "LoadImage": _node(
        "LoadImage",
        required={"image": [[], {"image_upload": True}]},
        output=["IMAGE", "MASK"],
        display_name="Load Image",
    ),
    "SaveImage": _node(
        "SaveImage",
        required={
            "images": ["IMAGE", {"tooltip": "The images to save."}],
            "filename_prefix": [
                "STRING",
                {
                    "default": "ComfyUI",
                    "tooltip": "The prefix for the file to save. This may include formatting "
                    "information such as %date:yyyy-MM-dd% or %Empty Latent Image.width% to "
                    "include values from nodes.",
                },
            ],
        },
        hidden=_HIDDEN_PNG,
        output=[],
        display_name="Save Image",
        description="Saves the input images to your ComfyUI output directory.",
        output_node=True,
    ),
}

_CORE: Final[_JSON] = {
    "ImageInvert": _node(
        "ImageInvert", required={"image": _IMAGE}, output=["IMAGE"], display_name="Invert Image"
    ),
    "ImageScale": _node(
        "ImageScale",
        required={
            "image": _IMAGE,
            "upscale_method": [UPSCALE_METHODS, {}],
            "width": _int(512, 0, 16384),
            "height": _int(512, 0, 16384),
            "crop": [["disabled", "center"], {}],
        },
        output=["IMAGE"],
        display_name="Upscale Image",
        category="image/upscaling",
    ),
    "ImageScaleBy": _node(
        "ImageScaleBy",
        required={
            "image": _IMAGE,
            "upscale_method": [UPSCALE_METHODS, {}],
            "scale_by": _float(1.0, 0.01, 8.0, 0.01),
        },
        output=["IMAGE"],
        display_name="Upscale Image By",
        category="image/upscaling",
    ),
    "ImageSharpen": _node(
        "ImageSharpen",
        required={
            "image": _IMAGE,
            "sharpen_radius": _int(1, 1, 31),
            "sigma": _float(1.0, 0.1, 10.0, 0.01),
            "alpha": _float(1.0, 0.0, 5.0, 0.01),
        },
        output=["IMAGE"],
        python_module="comfy_extras.nodes_post_processing",
        category="image/postprocessing",
    ),
    "ImageAddNoise": _node(
        "ImageAddNoise",
        required={
            "image": _IMAGE,
            "seed": _int(0, 0, MAX_SEED, step=None, control_after_generate=True),
            "strength": _float(0.5, 0.0, 1.0, 0.01),
        },
        output=["IMAGE"],
        python_module="comfy_extras.nodes_images",
        category="image",
    ),
    "GetImageSize": _node(
        "GetImageSize",
        required={"image": _IMAGE},
        hidden={"unique_id": "UNIQUE_ID"},
        output=["INT", "INT", "INT"],
        output_name=["width", "height", "batch_size"],
        display_name="Get Image Size",
        python_module="comfy_extras.nodes_images",
        category="image",
    ),
    "PreviewImage": _node(
        "PreviewImage",
        required={"images": ["IMAGE", {}]},
        hidden=_HIDDEN_PNG,
        output=[],
        display_name="Preview Image",
        description="Saves the input images to your ComfyUI output directory.",
        output_node=True,
    ),
    "SaveImageWebsocket": _node(
        "SaveImageWebsocket",
        required={"images": ["IMAGE", {}]},
        output=[],
        python_module="custom_nodes.websocket_image_save",
        category="api node/image",
        output_node=True,
    ),
}


def _models(*names: str) -> list[Any]:
    return [list(names), {}]


_CONJURE: Final[_JSON] = {
    "DualCLIPLoader": _node(
        "DualCLIPLoader",
        required={
            "clip_name1": _models("clip_l.safetensors", "t5xxl_fp16.safetensors"),
            "clip_name2": _models(
                "clip_l.safetensors", "t5xxl_fp16.safetensors", "t5xxl_fp8_e4m3fn.safetensors"
            ),
            "type": [["sdxl", "sd3", "flux", "hunyuan_video", "hidream"], {}],
        },
        optional={"device": [["default", "cpu"], {"advanced": True}]},
        output=["CLIP"],
        python_module="nodes",
        category="advanced/loaders",
    ),
    "UNETLoader": _node(
        "UNETLoader",
        required={
            "unet_name": _models("flux1-depth-dev.safetensors", "flux1-dev.safetensors"),
            "weight_dtype": [["default", "fp8_e4m3fn", "fp8_e4m3fn_fast", "fp8_e5m2"], {}],
        },
        output=["MODEL"],
        display_name="Load Diffusion Model",
        category="advanced/loaders",
    ),
    "VAELoader": _node(
        "VAELoader",
        required={"vae_name": _models("ae.safetensors", "pixel_space")},
        output=["VAE"],
        display_name="Load VAE",
        category="loaders",
    ),
    "DepthAnythingV2Preprocessor": _node(
        "DepthAnythingV2Preprocessor",
        required={
            "image": _IMAGE,
            "ckpt_name": _models(
                "depth_anything_v2_vitg.pth",
                "depth_anything_v2_vitl.pth",
                "depth_anything_v2_vitb.pth",
                "depth_anything_v2_vits.pth",
            ),
            "resolution": _int(512, 64, 16384, step=64),
        },
        output=["IMAGE"],
        display_name="Depth Anything V2 - Relative",
        python_module="custom_nodes.comfyui_controlnet_aux",
        category="ControlNet Preprocessors/Normal and Depth Estimators",
    ),
    "CLIPTextEncodeFlux": _node(
        "CLIPTextEncodeFlux",
        required={
            "clip": ["CLIP", {}],
            "clip_l": ["STRING", {"multiline": True, "dynamicPrompts": True}],
            "t5xxl": ["STRING", {"multiline": True, "dynamicPrompts": True}],
            "guidance": _float(3.5, 0.0, 100.0, 0.1),
        },
        output=["CONDITIONING"],
        python_module="comfy_extras.nodes_flux",
        category="advanced/conditioning/flux",
    ),
    "ConditioningZeroOut": _node(
        "ConditioningZeroOut",
        required={"conditioning": ["CONDITIONING", {}]},
        output=["CONDITIONING"],
        category="advanced/conditioning",
    ),
    "InstructPixToPixConditioning": _node(
        "InstructPixToPixConditioning",
        required={
            "positive": ["CONDITIONING", {}],
            "negative": ["CONDITIONING", {}],
            "vae": ["VAE", {}],
            "pixels": _IMAGE,
        },
        output=["CONDITIONING", "CONDITIONING", "LATENT"],
        output_name=["positive", "negative", "latent"],
        python_module="comfy_extras.nodes_ip2p",
        category="conditioning/instructpix2pix",
    ),
    "KSampler": _node(
        "KSampler",
        required={
            "model": ["MODEL", {}],
            "seed": _int(0, 0, MAX_SEED, step=None, control_after_generate=True),
            "steps": _int(20, 1, 10000, step=None),
            "cfg": _float(8.0, 0.0, 100.0, 0.1, round=0.01),
            "sampler_name": [SAMPLERS, {}],
            "scheduler": [SCHEDULERS, {}],
            "positive": ["CONDITIONING", {}],
            "negative": ["CONDITIONING", {}],
            "latent_image": ["LATENT", {}],
            "denoise": _float(1.0, 0.0, 1.0, 0.01),
        },
        output=["LATENT"],
        description="Uses the provided model, positive and negative conditioning to denoise "
        "the latent image.",
        category="sampling",
    ),
    "VAEDecode": _node(
        "VAEDecode",
        required={"samples": ["LATENT", {}], "vae": ["VAE", {}]},
        output=["IMAGE"],
        display_name="VAE Decode",
        category="latent",
    ),
    "ImageOnlyCheckpointLoader": _node(
        "ImageOnlyCheckpointLoader",
        required={
            "ckpt_name": _models("hunyuan3d-dit-v2.safetensors", "svd_xt.safetensors"),
        },
        output=["MODEL", "CLIP_VISION", "VAE"],
        display_name="Image Only Checkpoint Loader (img2vid model)",
        python_module="comfy_extras.nodes_video_model",
        category="loaders/video_models",
    ),
    "CLIPVisionEncode": _node(
        "CLIPVisionEncode",
        required={
            "clip_vision": ["CLIP_VISION", {}],
            "image": _IMAGE,
            "crop": [["center", "none"], {}],
        },
        output=["CLIP_VISION_OUTPUT"],
        display_name="CLIP Vision Encode",
        category="conditioning",
    ),
    "Hunyuan3Dv2Conditioning": _node(
        "Hunyuan3Dv2Conditioning",
        required={"clip_vision_output": ["CLIP_VISION_OUTPUT", {}]},
        output=["CONDITIONING", "CONDITIONING"],
        output_name=["positive", "negative"],
        python_module="comfy_extras.nodes_hunyuan3d",
        category="conditioning/video_models",
    ),
    "EmptyLatentHunyuan3Dv2": _node(
        "EmptyLatentHunyuan3Dv2",
        required={
            "resolution": _int(3072, 1, 8192),
            "batch_size": _int(1, 1, 4096, tooltip="The number of latent images in the batch."),
        },
        output=["LATENT"],
        python_module="comfy_extras.nodes_hunyuan3d",
        category="latent/3d",
    ),
    "VAEDecodeHunyuan3D": _node(
        "VAEDecodeHunyuan3D",
        required={
            "samples": ["LATENT", {}],
            "vae": ["VAE", {}],
            "num_chunks": _int(8000, 1000, 500000),
            "octree_resolution": _int(256, 16, 512),
        },
        output=["VOXEL"],
        python_module="comfy_extras.nodes_hunyuan3d",
        category="latent/3d",
    ),
    "VoxelToMeshBasic": _node(
        "VoxelToMeshBasic",
        required={"voxel": ["VOXEL", {}], "threshold": _float(0.6, -1.0, 1.0, 0.01)},
        output=["MESH"],
        python_module="comfy_extras.nodes_hunyuan3d",
        category="3d",
    ),
    "SaveGLB": _node(
        "SaveGLB",
        required={
            "mesh": ["MESH", {}],
            "filename_prefix": ["STRING", {"default": "mesh/ComfyUI"}],
        },
        hidden=_HIDDEN_PNG,
        output=[],
        python_module="comfy_extras.nodes_hunyuan3d",
        category="3d",
        output_node=True,
    ),
}

OBJECT_INFO: Final[dict[str, _JSON]] = {**_CAPTURED, **_CORE, **_CONJURE}


def output_nodes() -> frozenset[str]:
    """Class names whose ``output_node`` is true (they decide what a prompt runs)."""
    return frozenset(name for name, info in OBJECT_INFO.items() if info["output_node"])


def object_info(input_files: Iterable[str], only: str | None = None) -> _JSON:
    """The ``/object_info`` body (or ``/object_info/{only}``), with LoadImage's file list."""
    names = [only] if only is not None else list(OBJECT_INFO)
    out: _JSON = {}
    for name in names:
        info = OBJECT_INFO.get(name)
        if info is None:
            continue
        if name == "LoadImage":
            info = copy.deepcopy(info)
            info["input"]["required"]["image"][0] = sorted(input_files)
        out[name] = info
    return out
