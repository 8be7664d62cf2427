"""Hypothesis strategies: workflows, job requests, faults and fault schedules, budgets.

Workflows are API-format graphs (``{node_id: {"class_type", "inputs"}}``) built from the
simulator's node catalogue (:data:`conjure_actors.sim.catalog.OBJECT_INFO`, the shape of
ComfyUI's ``/object_info``): nodes are added one at a time, each input is either a link to
an earlier node's output of the right type or a literal drawn from the input's declared
range or choice list, and the graph ends in an output node. So every drawn graph is valid
for the simulator by construction, and shrinks towards a short chain.

Invalid workflows come in two kinds (see :data:`conjure_actors.testing.requests.Expectation`):
*refused* (structurally broken: ``submit`` must refuse it at once) and *rejected* (well
formed but the server's validation rejects it: the job must fail, not retry).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from hypothesis import strategies as st

from conjure_actors.sim import ComfyFaults, RunComfyFaults, write_png
from conjure_actors.sim.catalog import OBJECT_INFO
from conjure_actors.sim.comfyui_nodes import EXECUTABLE_CLASSES, scaled_size
from conjure_actors.testing.faults import (
    Fault,
    Knobs,
    LoseMachine,
    RateLimitBurst,
    RestartComfyUI,
    TimedFault,
)
from conjure_actors.testing.requests import JobRequest

__all__ = [
    "MODEL_FREE_CLASSES",
    "budgets",
    "catalog_workflows",
    "conjure_workflow",
    "fault_knobs",
    "fault_schedules",
    "faults",
    "images",
    "invalid_requests",
    "job_requests",
    "priorities",
    "prompts",
    "valid_requests",
]

MODEL_FREE_CLASSES: Final = (
    "EmptyImage",
    "LoadImage",
    "ImageInvert",
    "ImageScale",
    "ImageScaleBy",
    "ImageSharpen",
    "ImageAddNoise",
    "ImageBlur",
    "SaveImage",
    "PreviewImage",
)
"""Classes the default :func:`catalog_workflows` draws from (they need no model files)."""

# Inputs whose declared range is huge but whose cost grows with the value: keep them small
# so that a drawn workflow runs in milliseconds (the simulator computes real images).
_INT_CAPS: Final = {"width": 64, "height": 64, "batch_size": 2, "blur_radius": 5}
_FLOAT_CAPS: Final = {"scale_by": 1.0, "megapixels": 0.02}
_RGB_CHANNELS: Final = ("red", "green", "blue")
_LOAD_IMAGE_FILE: Final = "example.png"  # in every simulated ComfyUI's input folder
_LOAD_IMAGE_SHAPE: Final = (1, 64, 64)  # its (batch, height, width)
_RADIUS: Final = {"ImageBlur": "blur_radius", "ImageSharpen": "sharpen_radius"}
_SAME_SHAPE: Final = frozenset(
    {"ImageInvert", "ImageSharpen", "ImageAddNoise", "ImageBlur", "ImageQuantize", "ImageFlip"}
)
_PRIMITIVES: Final = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
_TEXT: Final = st.text(
    alphabet=st.characters(codec="ascii", categories=("L", "N", "Zs")), max_size=24
)

# ------------------------------------------------------------------------------ literals


def _literal(
    cls: str, name: str, spec: Sequence[Any], most: int | None = None
) -> st.SearchStrategy[Any] | None:
    """A strategy for a widget input's literal value, or None if it must be a link; an INT
    is at most ``most`` if given."""
    kind = spec[0]
    opts: Mapping[str, Any] = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
    if cls == "LoadImage" and name == "image":
        return st.just(_LOAD_IMAGE_FILE)
    if cls == "ImageToMask" and name == "channel":
        # No executable class makes an image with an alpha channel (LoadImage and
        # EmptyImage give RGB): ComfyUI answers "alpha" on one with an IndexError.
        return st.sampled_from(_RGB_CHANNELS)
    if isinstance(kind, list):
        return st.sampled_from(kind) if kind else None
    if kind == "COMBO":  # the newer form: ("COMBO", {"options": [...], "multiselect": ...})
        options = opts.get("options")
        if not options or opts.get("multiselect"):
            return None
        return st.sampled_from(list(options))
    if kind == "INT":
        lo = int(opts.get("min", 0))
        hi = int(opts.get("max", lo + 100))
        hi = min(hi, lo + _INT_CAPS.get(name, 100))
        if most is not None:
            hi = min(hi, most)
        return st.integers(lo, max(lo, hi))
    if kind == "FLOAT":
        flo = float(opts.get("min", 0.0))
        fhi = float(opts.get("max", flo + 1.0))
        fhi = min(fhi, _FLOAT_CAPS.get(name, fhi), flo + 10.0)
        step = float(opts.get("step", 0.01)) or 0.01
        count = max(0, int((fhi - flo) / step))
        return st.integers(0, count).map(lambda k: round(flo + k * step, 6))
    if kind == "STRING":
        if name == "filename_prefix":
            return st.text(alphabet="abcdefghijklmnop", min_size=1, max_size=8)
        return _TEXT
    if kind == "BOOLEAN":
        return st.booleans()
    return None


def _is_output(cls: str) -> bool:
    return bool(OBJECT_INFO[cls].get("output_node"))


def _outputs(cls: str) -> list[str]:
    return list(OBJECT_INFO[cls].get("output", []))


def _required(cls: str) -> Mapping[str, Any]:
    return dict(OBJECT_INFO[cls]["input"].get("required", {}))


# ------------------------------------------------------------------------ image shapes

_Shape = tuple[int, int, int]
"""An IMAGE's (batch, height, width), as the simulator makes it."""


def _image_shape(
    cls: str, inputs: Mapping[str, Any], shapes: Mapping[tuple[str, int], _Shape]
) -> _Shape | None:
    """The shape of ``cls``'s first output (an IMAGE) from its inputs, for the classes the
    checks of :func:`_fits` need to follow; None (unknown) for the others."""

    def source(name: str) -> _Shape | None:
        link = inputs.get(name)
        return shapes.get((link[0], link[1])) if isinstance(link, list) else None

    if cls == "EmptyImage":
        return int(inputs["batch_size"]), int(inputs["height"]), int(inputs["width"])
    if cls == "LoadImage":
        return _LOAD_IMAGE_SHAPE
    if cls == "ImageBlend":
        first, second = source("image1"), source("image2")
        if first is None or second is None:
            return None
        return max(first[0], second[0]), first[1], first[2]
    shape = source("image")
    if shape is None or cls in _SAME_SHAPE:
        return shape
    b, h, w = shape
    if cls == "ImageScale":
        w, h = scaled_size(w, h, int(inputs["width"]), int(inputs["height"]))
        return b, max(1, h), max(1, w)
    if cls == "ImageScaleBy":
        by = float(inputs["scale_by"])
        return b, max(1, round(h * by)), max(1, round(w * by))
    return None


def _fits(cls: str, name: str, shape: _Shape | None, chosen: Mapping[str, _Shape | None]) -> bool:
    """Whether an output of ``shape`` may feed ``cls``'s input ``name`` in a graph that must
    run, given the shapes ``chosen`` for its other inputs. ComfyUI fails ImageBlur and
    ImageSharpen when the radius (at least 1) is not below each side (reflect padding), and
    ImageBlend when the batches do not broadcast (equal, or one of them 1)."""
    if cls in _RADIUS and name == "image":
        return shape is not None and min(shape[1:]) >= 2
    if cls == "ImageBlend" and name in ("image1", "image2"):
        other = chosen.get("image2" if name == "image1" else "image1")
        if shape is None:
            return False
        return other is None or shape[0] == other[0] or 1 in (shape[0], other[0])
    return True


# --------------------------------------------------------------------------- workflows


@st.composite
def catalog_workflows(
    draw: st.DrawFn,
    classes: Sequence[str] = MODEL_FREE_CLASSES,
    *,
    max_nodes: int = 6,
) -> dict[str, Any]:
    """A valid API-format graph from the catalogue's ``classes``, ending in output nodes.

    Each node's link inputs connect to an earlier node's output of the declared type, so
    the graph is acyclic and type-correct; literals come from the declared ranges. Only
    classes the simulator executes for real (:data:`EXECUTABLE_CLASSES`) are drawn: the
    catalogue lists every class of a real server, most of which it only stands in for."""
    classes = [c for c in classes if c in EXECUTABLE_CLASSES]
    producers = [c for c in classes if not _is_output(c) and _outputs(c)]
    sinks = [c for c in classes if _is_output(c)]
    if not sinks:
        raise ValueError("catalog_workflows needs at least one output class")
    graph: dict[str, Any] = {}
    available: list[tuple[str, int, str]] = []  # (node id, output index, type)
    shapes: dict[tuple[str, int], _Shape] = {}  # the IMAGE outputs' whose shape is known

    def add(cls: str) -> bool:
        required = _required(cls)
        inputs: dict[str, Any] = {}
        chosen: dict[str, _Shape | None] = {}
        # Links first: a literal may depend on what a link brings (a blur's radius on the
        # image's size).
        for name, spec in required.items():
            if _literal(cls, name, spec) is not None:
                continue
            sources = [
                (nid, i)
                for nid, i, kind in available
                if kind == spec[0] and _fits(cls, name, shapes.get((nid, i)), chosen)
            ]
            if not sources:
                return False
            nid, index = draw(st.sampled_from(sources))
            inputs[name] = [nid, index]
            chosen[name] = shapes.get((nid, index))
        for name, spec in required.items():
            if name in inputs:
                continue
            most = None
            if _RADIUS.get(cls) == name and (shape := chosen.get("image")) is not None:
                most = min(shape[1:]) - 1
            literal = _literal(cls, name, spec, most)
            assert literal is not None
            inputs[name] = draw(literal, label=f"{cls}.{name}")
        inputs = {name: inputs[name] for name in required}  # the catalogue's order
        node_id = str(len(graph) + 1)
        graph[node_id] = {"class_type": cls, "inputs": inputs}
        if draw(st.booleans()):
            graph[node_id]["_meta"] = {"title": f"{cls} {node_id}"}
        available.extend(
            (node_id, i, kind) for i, kind in enumerate(_outputs(cls)) if kind not in _PRIMITIVES
        )
        if _outputs(cls)[:1] == ["IMAGE"] and (shape := _image_shape(cls, inputs, shapes)):
            shapes[node_id, 0] = shape
        return True

    def servable(cls: str) -> bool:
        """Whether each of ``cls``'s links can be served by what is already there."""
        return all(
            _literal(cls, name, spec) is not None
            or any(
                kind == spec[0] and _fits(cls, name, shapes.get((nid, i)), {})
                for nid, i, kind in available
            )
            for name, spec in _required(cls).items()
        )

    n = draw(st.integers(1, max(1, max_nodes - 1)))
    for _ in range(n):
        ready = [c for c in producers if servable(c)]
        if not ready:
            break
        add(draw(st.sampled_from(ready)))
    outputs = [c for c in sinks if servable(c)]
    if not outputs:
        # Nothing produced what an output needs: start again from a source of images.
        graph.clear()
        available.clear()
        shapes.clear()
        add("EmptyImage" if "EmptyImage" in classes else producers[0])
        outputs = [c for c in sinks if servable(c)]
    for cls in draw(st.lists(st.sampled_from(outputs), min_size=1, max_size=2)):
        add(cls)
    return graph


def conjure_workflow() -> dict[str, Any]:
    """The bundled CONJURE workflow (image + prompt -> depth PNG + GLB mesh)."""
    from conjure_actors.actors.example import bundled_workflow

    graph: dict[str, Any] = json.loads(bundled_workflow())
    return graph


def images() -> st.SearchStrategy[bytes]:
    """Small, valid PNG input images."""
    return st.builds(
        lambda w, h, tag: write_png(w, h, tag),
        st.integers(8, 48),
        st.integers(8, 48),
        st.binary(min_size=1, max_size=8),
    )


def prompts() -> st.SearchStrategy[str]:
    """Prompt texts (printable, possibly empty)."""
    return _TEXT


def priorities() -> st.SearchStrategy[int]:
    return st.integers(-3, 3)


# ------------------------------------------------------------------------ job requests


@st.composite
def valid_requests(draw: st.DrawFn, *, conjure_weight: float = 0.5) -> JobRequest:
    """A request that must run: the CONJURE workflow with an image and a prompt, or a
    graph drawn from the catalogue."""
    priority = draw(priorities())
    seed = draw(st.none() | st.integers(0, 2**32 - 1))
    if draw(st.floats(0, 1)) < conjure_weight:
        return JobRequest(
            conjure_workflow(),
            name="conjure_flux_mesh",
            image=draw(images()),
            prompt=draw(prompts()),
            priority=priority,
            seed=seed,
        )
    return JobRequest(draw(catalog_workflows()), name="generated", priority=priority, seed=seed)


def _refused_variants(graph: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Structurally broken copies of ``graph`` (each names what is wrong)."""
    first = next(iter(graph))
    out: list[tuple[str, dict[str, Any]]] = []
    g = copy.deepcopy(graph)
    g[first]["inputs"]["__extra__"] = ["999", 0]
    out.append(("link to a missing node", g))
    g = copy.deepcopy(graph)
    del g[first]["class_type"]
    out.append(("missing class_type", g))
    g = {k: v for k, v in copy.deepcopy(graph).items() if not _is_output(v["class_type"])}
    out.append(("no output node", g or {}))
    g = copy.deepcopy(graph)
    g[first]["inputs"]["__loop__"] = [first, 0]
    out.append(("a cycle", g))
    out.append(("UI-format export", {"nodes": [], "links": [], "version": 0.4}))
    g = copy.deepcopy(graph)
    g[first]["inputs"] = ["not", "an", "object"]
    out.append(("inputs not an object", g))
    return out


def _ancestors(graph: Mapping[str, Any], node_id: str) -> set[str]:
    """Every node ``node_id`` reads from, directly or not."""
    seen: set[str] = set()
    todo = [node_id]
    while todo:
        for value in graph[todo.pop()]["inputs"].values():
            if isinstance(value, list) and len(value) == 2 and value[0] not in seen:
                seen.add(value[0])
                todo.append(value[0])
    return seen


def _rejected_variants(graph: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Well-formed copies of ``graph`` that the server's validation rejects as a whole.

    ComfyUI runs a prompt whose *other* outputs are valid (and answers 200 with node
    errors), and never validates nodes no output reads: so the copies keep one output
    node only, and break that output or a node it reads from."""
    sinks = [nid for nid, node in graph.items() if _is_output(node["class_type"])]
    keep = sinks[0]
    base = {nid: node for nid, node in graph.items() if nid == keep or nid not in sinks}
    targets = [*sorted(_ancestors(base, keep)), keep]
    out: list[tuple[str, dict[str, Any]]] = []
    for nid in targets:
        node = base[nid]
        cls = node["class_type"]
        for name, spec in _required(cls).items():
            kind = spec[0]
            opts = spec[1] if len(spec) > 1 and isinstance(spec[1], Mapping) else {}
            if kind == "INT" and "min" in opts and not isinstance(node["inputs"][name], list):
                g = copy.deepcopy(base)
                g[nid]["inputs"][name] = int(opts["min"]) - 1
                out.append((f"{cls}.{name} below its minimum", g))
            elif isinstance(kind, list) and kind and cls != "LoadImage":
                g = copy.deepcopy(base)
                g[nid]["inputs"][name] = "no-such-choice"
                out.append((f"{cls}.{name} not one of its choices", g))
    source = targets[0]
    if source != keep:
        g = copy.deepcopy(base)
        g[source]["class_type"] = "NoSuchNodeClass"
        out.append(("an unknown node class", g))
    return out


@st.composite
def invalid_requests(draw: st.DrawFn) -> JobRequest:
    """A request that must not run: refused at submit, or rejected by the server."""
    graph = draw(catalog_workflows())
    priority = draw(priorities())
    if draw(st.booleans()):
        what, bad = draw(st.sampled_from(_refused_variants(graph)))
        return JobRequest(bad, name=f"refused: {what}", priority=priority, expect="refused")
    what, bad = draw(st.sampled_from(_rejected_variants(graph)))
    return JobRequest(bad, name=f"rejected: {what}", priority=priority, expect="rejected")


def job_requests(*, invalid_weight: float = 0.15) -> st.SearchStrategy[JobRequest]:
    """Mostly valid requests, sometimes invalid ones (``invalid_weight``: their share)."""

    @st.composite
    def pick(draw: st.DrawFn) -> JobRequest:
        if draw(st.floats(0, 1)) < invalid_weight:
            return draw(invalid_requests())
        return draw(valid_requests())

    return pick()


# ------------------------------------------------------------------------------ faults


def _rate(hi: float) -> st.SearchStrategy[float]:
    return st.sampled_from((0.0, 0.0, hi / 4, hi / 2, hi))


@st.composite
def fault_knobs(draw: st.DrawFn) -> Knobs:
    """Probabilistic fault knobs for RunComfy and every ComfyUI (moderate rates, so that
    retries can still win; most knobs stay at zero)."""
    runcomfy = RunComfyFaults(
        rate_limit_burst_probability=draw(_rate(0.1)),
        server_error_rate=draw(_rate(0.1)),
        launch_reject_rate=draw(_rate(0.3)),
        launch_ghost_rate=draw(_rate(0.3)),
        launch_error_rate=draw(_rate(0.3)),
        stuck_starting_rate=draw(_rate(0.3)),
        slow_ready_rate=draw(_rate(0.3)),
        slow_ready_factor=draw(st.sampled_from((2.0, 4.0))),
        vanish_rate=draw(_rate(0.2)),
        vanish_after=draw(st.sampled_from((10.0, 60.0, 200.0))),
        unknown_status_rate=draw(_rate(0.3)),
        not_found_polls_after_launch=draw(st.integers(0, 2)),
    )
    comfyui = ComfyFaults(
        ws_drop_rate=draw(_rate(0.05)),
        ws_silence_rate=draw(_rate(0.3)),
        http_429_rate=draw(_rate(0.1)),
        http_5xx_rate=draw(_rate(0.1)),
        node_error_rate=draw(_rate(0.2)),
        history_race_rate=draw(_rate(0.5)),
        slow_download_rate=draw(_rate(0.3)),
        truncated_download_rate=draw(_rate(0.3)),
    )
    return Knobs(runcomfy=runcomfy, comfyui=comfyui)


def faults() -> st.SearchStrategy[Fault]:
    """One fault: new knobs, a 429 burst, a ComfyUI restart or a lost machine."""
    return st.one_of(
        fault_knobs(),
        # Bursts up to three times the clients' five attempts: the runtime must wait them
        # out (start-up, recovery, launches) rather than fail.
        st.builds(RateLimitBurst, st.integers(1, 15)),
        st.builds(RestartComfyUI, st.integers(0, 7)),
        st.builds(LoseMachine, st.integers(0, 7)),
        st.just(Knobs()),  # faults stop
    )


def fault_schedules(
    *, max_faults: int = 5, horizon: float = 900.0
) -> st.SearchStrategy[list[TimedFault]]:
    """Faults at times within ``horizon`` simulated seconds (for ``Harness.schedule``)."""
    timed = st.builds(TimedFault, st.integers(0, round(horizon)).map(float), faults())
    return st.lists(timed, max_size=max_faults).map(lambda xs: sorted(xs, key=lambda t: t.after))


def budgets(*, max_usd: float = 5.0) -> st.SearchStrategy[float | None]:
    """No budget, or one in whole cents up to ``max_usd`` (some below one launch)."""
    return st.none() | st.integers(0, round(max_usd * 100)).map(lambda c: c / 100)
