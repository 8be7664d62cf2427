"""sim layer (see DESIGN.md): faithful ComfyUI and RunComfy simulators, with fault knobs.

- :class:`ComfyUISim` (``sim/comfyui.py``): one ComfyUI server as an ASGI app + worker.
- :class:`RunComfySim` (``sim/runcomfy.py``): the RunComfy API of one account, its machines'
  lifecycles (Starting -> Ready -> lease -> stop) and their bills.
- :class:`SimulatedCloud` / :func:`open_simulated_cloud` (``sim/cloud.py``): both together,
  in memory, under ``MockClock``; the one object the actors and the harness use.
- :func:`serve_cloud` / :func:`serve_comfyui` (``sim/serve.py``): the same over loopback with
  hypercorn. Imported lazily, so that ``import conjure_actors.sim`` does not load hypercorn.

The simulators never import the clients or the actors.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from conjure_actors.sim.cloud import (
    CloudFaults,
    CloudTimings,
    SimulatedCloud,
    machine_seed,
    open_simulated_cloud,
)
from conjure_actors.sim.comfyui import ComfyFaults, ComfyTimings, ComfyUISim
from conjure_actors.sim.media import GLB_MAGIC, PNG_SIGNATURE, write_glb, write_png
from conjure_actors.sim.runcomfy import (
    HOBBY_PRICES_MICROS,
    PRICE_TABLE_VERSION,
    PRO_PRICES_MICROS,
    BillingRecord,
    MachineHost,
    RunComfyFaults,
    RunComfySim,
    RunComfyTimings,
    SimWorkflow,
)

if TYPE_CHECKING:
    from conjure_actors.sim.serve import (
        ServedCloud,
        ServedComfyUI,
        serve_asgi,
        serve_cloud,
        serve_comfyui,
    )

_LAZY = frozenset({"ServedCloud", "ServedComfyUI", "serve_asgi", "serve_cloud", "serve_comfyui"})

__all__ = [
    "GLB_MAGIC",
    "HOBBY_PRICES_MICROS",
    "PNG_SIGNATURE",
    "PRICE_TABLE_VERSION",
    "PRO_PRICES_MICROS",
    "BillingRecord",
    "CloudFaults",
    "CloudTimings",
    "ComfyFaults",
    "ComfyTimings",
    "ComfyUISim",
    "MachineHost",
    "RunComfyFaults",
    "RunComfySim",
    "RunComfyTimings",
    "ServedCloud",
    "ServedComfyUI",
    "SimWorkflow",
    "SimulatedCloud",
    "machine_seed",
    "open_simulated_cloud",
    "serve_asgi",
    "serve_cloud",
    "serve_comfyui",
    "write_glb",
    "write_png",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module("conjure_actors.sim.serve"), name)
    raise AttributeError(f"module 'conjure_actors.sim' has no attribute {name!r}")
