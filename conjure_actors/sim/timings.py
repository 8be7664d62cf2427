"""How long simulated ComfyUI nodes take: a per-class cost model.

A node takes ``scale * (constant + per_pixel * pixels + steps * per_step)`` seconds, where
``pixels`` is what it works on (:func:`conjure_actors.sim.comfyui_nodes.pixels_of`) and
``steps`` the progress updates it sends (a sampler's ``steps``). Every prompt also costs
``per_prompt`` (queueing, caching, history: what a fully cached run takes), freeing the
cached outputs the prompt does not use costs ``free_per_pixel`` a pixel, and every
``pause_every``-th prompt the worker pauses ``pause`` before starting it (:data:`REAL_PAUSE`).

The figures at real speed (:data:`REAL_CONSTANT`, :data:`REAL_PER_PIXEL`,
:data:`REAL_PER_STEP`) come from two sources:

- **CPU, model-free classes**: fitted to the real server's timings on this machine
  (``../shared/protocols/captures/timings.json``; ComfyUI 0.3.64, 2 cores). A fully cached
  run takes 3 ms (the per-prompt cost); EmptyImage -> ImageInvert -> SaveImage at 64x64
  takes 6 ms (about 1 ms a node); the seven-node LoadImage/Scale/Blur/Save graph 13 ms.
  The frame times of ``ws_queue_and_interrupt.jsonl`` give the per-pixel terms: EmptyImage
  at 4x1024x1024 took 25-31 ms (6.5e-9 s a pixel), ImageBlur radius 15 on it 733-747 ms
  (1.76e-7 s a pixel), which also gives the 0.73 s from /interrupt to
  ``execution_interrupted`` while that node runs. SaveImage's per-pixel term is PNG
  encoding at level 4 as measured here with Pillow.
- **GPU, model classes** (the CONJURE workflow's FLUX depth and Hunyuan3D nodes and the
  other loaders): no local measurement is possible (no GPU, no model files), so the table
  follows the project's seeds: a FLUX job takes 100-500 s on a RunComfy machine. Model
  loads dominate (10-25 s each, cold), a FLUX step at 1024x1024 takes about 1.2 s; the
  bundled workflow comes to about 150 s.

:meth:`ComfyTimings.real` is that model at real speed (the ``sim`` command's default).
``ComfyTimings()`` is the quick demo used by ``run``'s embedded cloud and by tests: the same
model :data:`DEMO_SPEEDUP` times faster (the CONJURE workflow in about 1.5 s). Tests stretch
or shrink either with ``scale`` (MockClock makes long simulated runs free).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs

from conjure_actors.sim.comfyui_nodes import EXECUTABLE_CLASSES

__all__ = [
    "DEMO_SPEEDUP",
    "REAL_CONSTANT",
    "REAL_FREE_PER_PIXEL",
    "REAL_PAUSE",
    "REAL_PER_PIXEL",
    "REAL_PER_PROMPT",
    "REAL_PER_STEP",
    "REAL_PROGRESS_STEPS",
    "ComfyTimings",
]

#: How much faster than a real server the default (demo) timings run.
DEMO_SPEEDUP: Final = 100.0

#: A fully cached prompt, POST to ``executing null`` (captures/timings.json).
REAL_PER_PROMPT: Final = 0.003
#: A model-free node with no pixel term: (6 ms - 3 ms) / 3 nodes in invert_save.
REAL_MODEL_FREE_NODE: Final = 0.001
#: A model node the table does not list: as long as a small model load.
REAL_MODEL_NODE: Final = 2.0

REAL_CONSTANT: Final[Mapping[str, float]] = {
    # CPU, fitted (see the module docstring).
    "EmptyImage": 0.0005,
    "ImageInvert": 0.0005,
    "LoadImage": 0.0015,
    "SaveImage": 0.0015,
    "PreviewImage": 0.0012,
    "GetImageSize": 0.0005,
    "SaveImageWebsocket": 0.0005,
    # GPU, from the seeds' FLUX job figures (100-500 s).
    "DualCLIPLoader": 12.0,
    "CLIPLoader": 8.0,
    "UNETLoader": 25.0,
    "CheckpointLoaderSimple": 20.0,
    "ImageOnlyCheckpointLoader": 15.0,
    "VAELoader": 1.0,
    "CLIPVisionLoader": 2.0,
    "ControlNetLoader": 4.0,
    "LoraLoader": 2.0,
    "DepthAnythingV2Preprocessor": 4.0,
    "CLIPTextEncode": 0.5,
    "CLIPTextEncodeFlux": 2.0,
    "ConditioningZeroOut": 0.01,
    "InstructPixToPixConditioning": 0.5,
    "KSampler": 1.0,
    "KSamplerAdvanced": 1.0,
    "VAEDecode": 2.0,
    "VAEEncode": 1.0,
    "CLIPVisionEncode": 1.0,
    "Hunyuan3Dv2Conditioning": 0.05,
    "EmptyLatentHunyuan3Dv2": 0.01,
    "EmptyLatentImage": 0.001,
    "VAEDecodeHunyuan3D": 12.0,
    "VoxelToMeshBasic": 3.0,
    "SaveGLB": 0.5,
}

REAL_PER_PIXEL: Final[Mapping[str, float]] = {
    "EmptyImage": 6.5e-9,  # 25-31 ms on 4 x 1024 x 1024
    "ImageBlur": 1.76e-7,  # 733-747 ms on 4 x 1024 x 1024, radius 15
    "ImageSharpen": 1.76e-7,
    "SaveImage": 1.2e-8,  # PNG level 4, Pillow, this CPU
    "PreviewImage": 8e-9,  # PNG level 1
    "SaveImageWebsocket": 8e-9,  # PNG level 1
    "ImageScale": 2e-8,
    "ImageAddNoise": 3e-8,
}

REAL_PER_STEP: Final[Mapping[str, float]] = {
    "KSampler": 1.2,  # FLUX dev at 1024 x 1024 on a RunComfy GPU
    "KSamplerAdvanced": 1.2,
    "VAEDecodeHunyuan3D": 1.0,  # per progress update (8 chunks of the octree)
}

#: Freeing cached outputs at the start of a prompt, execution_start to execution_cached:
#: 9.5 ms (ws_queue_and_interrupt.jsonl) and 7.2 ms (ws_queue_shape.jsonl), each time for
#: two 4x1024x1024 batches (8.4 M pixels) left by an interrupted blur chain.
REAL_FREE_PER_PIXEL: Final = 1.0e-9

#: The worker's pause at every tenth prompt, between taking it from the queue and
#: ``execution_start``: POST answered to ``execution_start`` took 9.9, 10.2 and 6.5 ms at
#: queue numbers 62, 82 and 392 (ws_loadimage_run, ws_queue_and_interrupt, ws_big_frame),
#: 0.1-1.3 ms for the 10 other prompts the worker took at once (numbers 0-1, 63-66, 80,
#: 87, 91, 393). Nothing in ComfyUI's worker (main.py prompt_worker, execution.py) waits
#: there, and its own gc.collect() runs at most every 10 s, after a prompt; the stall held
#: the HTTP side too (ws_queue_and_interrupt answered its third POST just after it). Most
#: likely CPython's automatic full collection, whose cadence follows allocations: inferred,
#: not measured inside the server; the period comes from those three occurrences.
REAL_PAUSE: Final = 0.0086
#: Queue numbers (POSTs, the server's ``number`` counter) between two pauses ...
PAUSE_EVERY: Final = 10
#: ... and where the captured server's cycle stood: numbers ending in 2.
PAUSE_PHASE: Final = 2

#: Classes that send progress updates the graph does not say (the mesh decoder's chunks).
REAL_PROGRESS_STEPS: Final[Mapping[str, int]] = {"VAEDecodeHunyuan3D": 8}

_MODEL_FREE_PREFIXES: Final = ("image", "mask", "latent", "utils", "api node/image", "_for_testing")


def _scaled(table: Mapping[str, float], factor: float) -> dict[str, float]:
    return {k: v * factor for k, v in table.items()}


@attrs.frozen
class ComfyTimings:
    """Seconds a node takes: ``scale * (per_class + per_pixel * pixels + steps * per_step)``.

    A class missing from ``per_class`` takes ``default_node`` if it needs no model (the
    simulator runs it for real, or its category is image, mask, latent or utility work) and
    ``default_model_node`` otherwise;
    missing from ``per_step``, ``default_node / 4`` a step. ``steps`` is how many progress
    updates a node sends: ``KSampler`` its ``steps`` input, ``SaveImageWebsocket`` one per
    image, any class in ``progress_steps`` that many. ``scale`` stretches or shrinks it all
    (0 = instant; 100 = long runs for tests under MockClock).

    The defaults are the real-speed model divided by :data:`DEMO_SPEEDUP`;
    :meth:`real` is the model at real speed.
    """

    scale: float = 1.0
    default_node: float = REAL_MODEL_FREE_NODE / DEMO_SPEEDUP
    default_model_node: float = REAL_MODEL_NODE / DEMO_SPEEDUP
    per_prompt: float = REAL_PER_PROMPT / DEMO_SPEEDUP
    per_class: Mapping[str, float] = attrs.field(
        factory=lambda: _scaled(REAL_CONSTANT, 1 / DEMO_SPEEDUP)
    )
    per_pixel: Mapping[str, float] = attrs.field(
        factory=lambda: _scaled(REAL_PER_PIXEL, 1 / DEMO_SPEEDUP)
    )
    per_step: Mapping[str, float] = attrs.field(
        factory=lambda: _scaled(REAL_PER_STEP, 1 / DEMO_SPEEDUP)
    )
    progress_steps: Mapping[str, int] = attrs.field(factory=lambda: dict(REAL_PROGRESS_STEPS))
    free_per_pixel: float = REAL_FREE_PER_PIXEL / DEMO_SPEEDUP
    """Dropping cached outputs a new prompt does not use, per pixel freed."""
    pause: float = REAL_PAUSE / DEMO_SPEEDUP
    """The worker's periodic pause before ``execution_start`` (see :data:`REAL_PAUSE`)."""
    pause_every: int = PAUSE_EVERY
    pause_phase: int = PAUSE_PHASE
    speedup: float = DEMO_SPEEDUP
    """How much faster than a real server these timings run (at ``scale`` 1)."""

    @classmethod
    def real(cls, scale: float = 1.0) -> ComfyTimings:
        """The cost model at the real server's speed (``scale`` multiplies it)."""
        return cls(
            scale=scale,
            default_node=REAL_MODEL_FREE_NODE,
            default_model_node=REAL_MODEL_NODE,
            per_prompt=REAL_PER_PROMPT,
            per_class=dict(REAL_CONSTANT),
            per_pixel=dict(REAL_PER_PIXEL),
            per_step=dict(REAL_PER_STEP),
            free_per_pixel=REAL_FREE_PER_PIXEL,
            pause=REAL_PAUSE,
            speedup=1.0,
        )

    def node_seconds(self, class_type: str, pixels: int = 0, category: str = "") -> float:
        """The node's own time (without its progress steps)."""
        constant = self.per_class.get(class_type)
        if constant is None:
            model_free = class_type in EXECUTABLE_CLASSES or category.startswith(
                _MODEL_FREE_PREFIXES
            )
            constant = self.default_node if model_free else self.default_model_node
        return self.scale * (constant + self.per_pixel.get(class_type, 0.0) * pixels)

    def step_seconds(self, class_type: str) -> float:
        return self.scale * self.per_step.get(class_type, self.default_node / 4)

    def prompt_seconds(self) -> float:
        return self.scale * self.per_prompt

    def free_seconds(self, pixels: int) -> float:
        return self.scale * self.free_per_pixel * pixels

    def pause_seconds(self, counter: int | None) -> float:
        """The pause before running the prompt the queue counter numbered ``counter``
        (None: the client chose the number, the counter did not move)."""
        if counter is None or self.pause_every <= 0:
            return 0.0
        return self.scale * self.pause if counter % self.pause_every == self.pause_phase else 0.0
