"""ComfyUI API-format workflow graphs: load, validate, bind inputs, find outputs and roles.

An API-format graph maps a node id (a string) to ``{"class_type", "inputs", "_meta"?}``.
An input value is a *literal* (str, int, float, bool, or ``{"__value__": x}`` for a literal
list) or a *link* ``[source_node_id, output_index]`` (any 2-element list is read as a link,
as ComfyUI does). See ``protocols/comfyui.md`` section 3. A file may also hold a ``POST
/prompt`` body, ``{"prompt": graph, "client_id"?...}`` (how ComfyUI's API examples post
one): the loaders unwrap it (:func:`unwrap_prompt`).

Validation reports EVERY problem at once, each naming the node id and the input, each on
ONE line whatever the graph holds (ids, classes and names with control characters are
quoted: :func:`show`). It is
stronger with a *catalog* (node knowledge from ComfyUI's ``/object_info``: output types,
required and optional inputs, output nodes, see :class:`NodeSpec`); without one it checks
the structure and falls back to a built-in list of output classes.

*Bindings* are ``"NODE.INPUT" -> JSON text`` (how ``JobSubmitted`` stores them): the image
goes into a LoadImage node, the prompt into a text-encode node, ``--set NODE.INPUT=VALUE``
anywhere (VALUE parsed as JSON when it parses, so ``true``/``20``/``0.5`` keep their types,
else taken as a string). *Roles* are the CONJURE workflow's named nodes (input image,
prompt, depth image, GLB mesh), found by ``_meta.title`` first, then by class.

Everything here is pure except :func:`load_workflow`, which reads the file it is given.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from conjure_actors.domain.errors import WorkflowError

__all__ = [
    "BUILTIN_OUTPUT_CLASSES",
    "IMAGE_LOADER_CLASSES",
    "PROMPT_BODY_KEYS",
    "TEXT_ENCODER_INPUTS",
    "Catalog",
    "InputConfig",
    "NodeSpec",
    "Roles",
    "Workflow",
    "apply_bindings",
    "bindings_for",
    "canonical_json",
    "catalog_from_object_info",
    "conjure_roles",
    "graph_sha256",
    "is_link",
    "load_workflow",
    "node_sort_key",
    "output_nodes",
    "parse_set",
    "parse_value",
    "problem_lines",
    "seed_inputs",
    "show",
    "unknown_classes",
    "unwrap_prompt",
    "validate_bindings",
    "validate_graph",
    "workflow_from_mapping",
    "workflow_from_text",
]

BUILTIN_OUTPUT_CLASSES: Final = frozenset(
    {
        "SaveImage",
        "PreviewImage",
        "SaveImageWebsocket",
        "SaveAnimatedWEBP",
        "SaveAnimatedPNG",
        "SaveGLB",
        "SaveLatent",
        "SaveAudio",
        "SaveVideo",
        "SaveWEBM",
        "PreviewAny",
        "PreviewAudio",
        "Preview3D",
    }
)
"""Output classes known without a catalog (``output_node: true`` in ``/object_info``)."""

IMAGE_LOADER_CLASSES: Final = ("LoadImage", "LoadImageOutput")

TEXT_ENCODER_INPUTS: Final[Mapping[str, tuple[str, ...]]] = {
    "CLIPTextEncodeFlux": ("clip_l", "t5xxl"),
    "CLIPTextEncode": ("text",),
    "CLIPTextEncodeSDXL": ("text_g", "text_l"),
    "CLIPTextEncodeSD3": ("clip_l", "clip_g", "t5xxl"),
}
"""Text-encode classes and the inputs a prompt goes into."""

ROLE_TITLES: Final[Mapping[str, str]] = {
    "input_image": "INPUTIMAGE",
    "prompt": "POSITIVECLIP",
    "depth_image": "EXPORT IMAGE",
    "mesh": "EXPORTGLB",
}

SEED_INPUTS: Final = ("seed", "noise_seed")

# ------------------------------------------------------------------------------ catalog


@attrs.frozen
class InputConfig:
    """What ``/object_info`` says about one input's literal values: its type, the range of
    a number, the choices of a combo (``None``: not a combo)."""

    kind: str
    minimum: int | float | None = None
    maximum: int | float | None = None
    choices: tuple[Any, ...] | None = None
    multiselect: bool = False
    image_upload: bool = False
    """The combo lists the server's input folder: a run fills it with its own upload."""

    @classmethod
    def from_object_info(cls, config: object) -> InputConfig:
        """Build from one input's ``[type, {options}]`` (tolerant of any shape)."""
        kind: object = config
        extra: Mapping[str, Any] = {}
        if isinstance(config, list | tuple):
            kind = config[0] if config else None
            if len(config) > 1 and isinstance(config[1], Mapping):
                extra = config[1]
        choices: tuple[Any, ...] | None = None
        if isinstance(kind, list | tuple):
            choices, kind = tuple(kind), "COMBO"
        elif kind == "COMBO":
            options = extra.get("options")
            choices = tuple(options) if isinstance(options, list | tuple) else ()
        return cls(
            kind=kind if isinstance(kind, str) else "COMBO",
            minimum=_number(extra.get("min")),
            maximum=_number(extra.get("max")),
            choices=choices,
            multiselect=bool(extra.get("multiselect", False)),
            image_upload=bool(extra.get("image_upload", False)),
        )


def _number(value: object) -> int | float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return value


@attrs.frozen
class NodeSpec:
    """What ComfyUI's ``/object_info`` says about one node class."""

    class_type: str
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    input_types: Mapping[str, str] = attrs.Factory(dict)
    """Input name -> its type (``IMAGE``, ``INT``...; ``COMBO`` for a list of choices)."""
    outputs: tuple[str, ...] = ()
    output_node: bool = False
    configs: Mapping[str, InputConfig] = attrs.Factory(dict)
    """Input name -> its type, range and choices (what :mod:`preflight` checks values by)."""

    @classmethod
    def from_object_info(cls, class_type: str, info: Mapping[str, Any]) -> NodeSpec:
        """Build from one entry of ``/object_info`` (tolerant of missing keys)."""
        inputs = info.get("input") or {}
        types: dict[str, str] = {}
        configs: dict[str, InputConfig] = {}
        names: dict[str, tuple[str, ...]] = {}
        for section in ("required", "optional"):
            entries = inputs.get(section) or {}
            names[section] = tuple(entries)
            for name, config in entries.items():
                kind = config[0] if isinstance(config, list | tuple) and config else config
                types[name] = kind if isinstance(kind, str) else "COMBO"
                configs[name] = InputConfig.from_object_info(config)
        outputs = tuple(str(o) if isinstance(o, str) else "COMBO" for o in info.get("output") or ())
        return cls(
            class_type=class_type,
            required=names["required"],
            optional=names["optional"],
            input_types=types,
            outputs=outputs,
            output_node=bool(info.get("output_node", False)),
            configs=configs,
        )

    def accepts(self, name: str) -> bool:
        """Whether the class has an input called ``name``."""
        return name in self.input_types


Catalog = Mapping[str, NodeSpec]
"""class_type -> NodeSpec."""


def catalog_from_object_info(object_info: Mapping[str, Any]) -> dict[str, NodeSpec]:
    """A catalog from a whole ``/object_info`` answer (class name -> info)."""
    return {
        name: NodeSpec.from_object_info(name, info)
        for name, info in object_info.items()
        if isinstance(info, Mapping)
    }


# ------------------------------------------------------------------------------- basics


def node_sort_key(node_id: str) -> tuple[int, int, str]:
    """Numeric ids in numeric order, then the rest alphabetically (total: any string)."""
    # isdecimal, not isdigit: "²" is a digit that int() refuses.
    return (0, int(node_id), "") if node_id.isdecimal() else (1, 0, node_id)


def show(text: object) -> str:
    """A node id, class or name as a message shows it: as it is when it is plain printable
    text, else quoted like ``repr`` (a newline or a control character becomes ``\\n``,
    ``\\x1b``...), so that every problem is ONE line whatever the workflow holds."""
    if isinstance(text, str) and text and text.isprintable() and text.strip() == text:
        return text
    return repr(text)


def is_link(value: object) -> bool:
    """Whether an input value is a link (ComfyUI reads ANY 2-element list as one)."""
    return isinstance(value, list) and len(value) == 2


def canonical_json(graph: Mapping[str, Any]) -> str:
    """The graph as canonical JSON text: sorted keys, no spaces, UTF-8 kept."""
    return json.dumps(graph, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def graph_sha256(graph: Mapping[str, Any]) -> str:
    """sha256 (hex) of :func:`canonical_json`: equal graphs hash equal whatever the layout."""
    return hashlib.sha256(canonical_json(graph).encode("utf-8")).hexdigest()


def _title(node: Mapping[str, Any]) -> str | None:
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


def _class(node: Any) -> str | None:
    if not isinstance(node, Mapping):
        return None
    cls = node.get("class_type")
    return cls if isinstance(cls, str) else None


def _inputs(node: Any) -> Mapping[str, Any]:
    if not isinstance(node, Mapping):
        return {}
    inputs = node.get("inputs")
    return inputs if isinstance(inputs, Mapping) else {}


def _is_output(class_type: str | None, catalog: Catalog | None) -> bool:
    if class_type is None:
        return False
    if catalog is not None and class_type in catalog:
        return catalog[class_type].output_node
    return class_type in BUILTIN_OUTPUT_CLASSES


def output_nodes(graph: Mapping[str, Any], catalog: Catalog | None = None) -> list[str]:
    """Ids of the output nodes (what ComfyUI runs toward), in node order."""
    return sorted(
        (nid for nid, node in graph.items() if _is_output(_class(node), catalog)),
        key=node_sort_key,
    )


# ----------------------------------------------------------------------------- validate


def _ui_format(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("nodes"), list) and isinstance(data.get("links"), list)


UI_FORMAT_HINT: Final = (
    "this is a UI-format export (top-level 'nodes' and 'links'): in ComfyUI, export it with"
    ' "Save (API)" (Workflow > Export (API)) and use that file'
)


def validate_graph(
    graph: object, catalog: Catalog | None = None, *, strict: bool = True
) -> list[str]:
    """Every problem of an API-format graph (empty list: it can run), each naming the node
    id and, where it applies, the input.

    With a catalog and ``strict``, a class the catalog does not know is a problem; with
    ``strict=False`` (a built-in catalog that cannot know the user's custom nodes) such
    nodes are checked for structure only (see :func:`unknown_classes`)."""
    if not isinstance(graph, Mapping):
        return [f"a workflow is a JSON object of nodes, not {type(graph).__name__}"]
    if _ui_format(graph):
        return [UI_FORMAT_HINT]
    if not graph:
        return ["the workflow has no nodes"]
    problems: list[str] = []
    edges: dict[str, list[tuple[str, str]]] = {}  # node -> [(input name, source node)]
    for nid in sorted(graph, key=node_sort_key):
        node = graph[nid]
        where = f"node {show(nid)}"
        if not isinstance(node, Mapping):
            problems.append(f"{where}: is not an object with class_type and inputs")
            continue
        cls = _class(node)
        if cls is None:
            problems.append(f"{where}: missing class_type")
        spec = catalog.get(cls) if catalog is not None and cls is not None else None
        if strict and catalog is not None and cls is not None and spec is None:
            problems.append(f"{where}: unknown class {cls!r} (not in the node catalog)")
        raw_inputs = node.get("inputs", {})
        if not isinstance(raw_inputs, Mapping):
            problems.append(f"{where}: 'inputs' must be an object")
            raw_inputs = {}
        node_edges = edges.setdefault(nid, [])
        for name, value in raw_inputs.items():
            problems.extend(_check_input(graph, nid, name, value, spec, catalog, node_edges))
        if spec is not None:
            problems.extend(
                f"{where} ({show(cls)}) input {name!r}: required input missing"
                for name in spec.required
                if name not in raw_inputs
            )
    problems.extend(_find_cycles(edges))
    if not output_nodes(graph, catalog):
        known = "" if catalog is not None else " (known output classes: SaveImage, SaveGLB...)"
        problems.append("the workflow has no output node: add a SaveImage or similar node" + known)
    return problems


# Literal input values (an exact-type set lookup first, then isinstance for subclasses).
_LITERALS: Final = frozenset({str, int, float, bool})
_LITERAL_TYPES: Final = (bool, int, float, str)


def _check_input(
    graph: Mapping[str, Any],
    nid: str,
    name: str,
    value: object,
    spec: NodeSpec | None,
    catalog: Catalog | None,
    node_edges: list[tuple[str, str]],
) -> list[str]:
    if type(value) in _LITERALS or isinstance(value, _LITERAL_TYPES):  # most inputs
        return []
    where = f"node {show(nid)} input {name!r}"
    if isinstance(value, Mapping):
        if "__value__" in value:
            return []
        return [f"{where}: an object is neither a literal nor a link (wrap values as __value__)"]
    if isinstance(value, list):
        if len(value) != 2:
            return [
                f"{where}: a list of {len(value)} items is neither a link [node_id, output_index]"
                ' nor a literal (wrap a literal list as {"__value__": [...]})'
            ]
        source, index = value
        if not isinstance(source, str):
            return [f"{where}: link source {source!r} must be a node id string"]
        if source not in graph:
            return [f"{where}: link to missing node {source!r}"]
        node_edges.append((name, source))
        if isinstance(index, bool) or not isinstance(index, int) or index < 0:
            return [f"{where}: bad output index {index!r} (a non-negative integer)"]
        src_cls = _class(graph[source])
        src_spec = catalog.get(src_cls) if catalog is not None and src_cls is not None else None
        if src_spec is not None:
            if index >= len(src_spec.outputs):
                return [
                    f"{where}: bad output index {index}: node {show(source)} ({show(src_cls)})"
                    f" has {len(src_spec.outputs)} outputs"
                ]
            wanted = spec.input_types.get(name) if spec is not None else None
            got = src_spec.outputs[index]
            if wanted and wanted not in ("*", "COMBO") and got != "*" and wanted != got:
                return [
                    f"{where}: expects {show(wanted)} but node {show(source)} output {index}"
                    f" is {show(got)}"
                ]
        return []
    return [f"{where}: {json.dumps(value)} is neither a literal nor a link"]


def unknown_classes(graph: Mapping[str, Any], catalog: Catalog) -> list[str]:
    """Classes used by ``graph`` that ``catalog`` does not describe (sorted)."""
    return sorted({cls for node in graph.values() if (cls := _class(node)) and cls not in catalog})


def _find_cycles(edges: Mapping[str, list[tuple[str, str]]]) -> list[str]:
    """One problem per link that closes a cycle, with the cycle's path.

    Iterative depth-first search with three colours (no recursion: a long chain of nodes
    must not hit Python's recursion limit). An edge to a node still on the stack (grey)
    closes a cycle; the stack from that node is the cycle.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(edges, white)
    problems: list[str] = []
    for root in sorted(edges, key=node_sort_key):
        if colour[root] != white:
            continue
        stack: list[tuple[str, int]] = [(root, 0)]
        path: list[str] = [root]
        colour[root] = grey
        while stack:
            nid, i = stack[-1]
            out = edges.get(nid, [])
            if i < len(out):
                stack[-1] = (nid, i + 1)
                name, src = out[i]
                state = colour.get(src, black)
                if state == grey:
                    loop = [show(n) for n in (*path[path.index(src) :], src)]
                    problems.append(
                        f"node {show(nid)} input {name!r}: link to node {show(src)} closes a"
                        f" cycle ({' -> '.join(loop)})"
                    )
                elif state == white:
                    colour[src] = grey
                    stack.append((src, 0))
                    path.append(src)
            else:
                colour[nid] = black
                stack.pop()
                path.pop()
    return problems


def problem_lines(exc: WorkflowError) -> list[str]:
    """How a user is shown a :class:`WorkflowError`: one line for one problem; else a header
    naming the source and the count, then one line per problem (``validate`` and ``run`` say
    it the same way)."""
    if len(exc.problems) == 1:
        return [f"error: {exc}"]
    where = f"{exc.source}: " if exc.source else ""
    header = getattr(exc, "header", None) or f"workflow has {len(exc.problems)} problems:"
    return [
        f"error: {where}{header}",
        *(f"  - {problem}" for problem in exc.problems),
    ]


# ----------------------------------------------------------------------------- workflow


@attrs.frozen
class Workflow:
    """A validated API-format graph (treat ``graph`` as read-only) and where it came from."""

    graph: Mapping[str, Any]
    name: str = "workflow"
    # Computed once per instance (the graph is read-only): a job's submission asks for the
    # hash and the roles several times (issue 16).
    _sha256: str | None = attrs.field(default=None, init=False, eq=False, repr=False)
    _roles: Roles | None = attrs.field(default=None, init=False, eq=False, repr=False)
    # True once the graph is known to have no problem without a catalog (bindings_for).
    _valid: bool = attrs.field(default=False, init=False, eq=False, repr=False)

    @property
    def sha256(self) -> str:
        """The graph's canonical hash (how jobs refer to it)."""
        sha = self._sha256
        if sha is None:
            sha = graph_sha256(self.graph)
            object.__setattr__(self, "_sha256", sha)
        return sha

    def canonical_json(self) -> str:
        """The canonical JSON text (what ``WorkflowRegistered.graph_json`` stores)."""
        return canonical_json(self.graph)

    def outputs(self, catalog: Catalog | None = None) -> list[str]:
        """Output node ids."""
        return output_nodes(self.graph, catalog)

    def roles(self) -> Roles:
        """The CONJURE roles of this graph."""
        roles = self._roles
        if roles is None:
            roles = conjure_roles(self.graph)
            object.__setattr__(self, "_roles", roles)
        return roles

    def class_of(self, node_id: str) -> str | None:
        """The class of node ``node_id`` (None if absent)."""
        return _class(self.graph.get(node_id))

    def prompt(self, bindings: Mapping[str, str]) -> dict[str, Any]:
        """The graph with ``bindings`` injected: the ``prompt`` body of ``POST /prompt``."""
        return apply_bindings(self.graph, bindings)


# The keys ComfyUI's ``POST /prompt`` body may hold beside ``prompt`` (server.py).
PROMPT_BODY_KEYS: Final = frozenset(
    {
        "prompt",
        "client_id",
        "extra_data",
        "front",
        "number",
        "prompt_id",
        "partial_execution_targets",
    }
)


def unwrap_prompt(data: object) -> object:
    """The graph of a ``POST /prompt`` body (``{"prompt": {...}, "client_id"?...}``, the shape
    ComfyUI's own API examples post); anything else is returned as it is.

    It is a body only when ``prompt`` is an object that is not itself a node (no
    ``class_type``) and every other key is one a body has: a graph whose node id happens to
    be ``"prompt"`` stays a graph."""
    if not isinstance(data, Mapping) or not set(data) <= PROMPT_BODY_KEYS:
        return data
    inner = data.get("prompt")
    if isinstance(inner, Mapping) and "class_type" not in inner:
        return inner
    return data


# Graphs that validated without a catalog, by the sha256 of their canonical JSON: a service
# or a batch submits the same workflow dict for every job, and validating it again each
# time was a tenth of a short job's pipeline (issue 16). Only plain JSON graphs (dicts with
# string keys, lists, exact JSON scalars: equal text then means an equal graph, equally
# valid) of at most 64 KiB of text are kept; the cached graph is a private deep copy that
# nobody changes, handed out as a copy (or as it is to a caller that only reads it:
# ``shared``). Bounded: the oldest goes.
_VALID_GRAPHS: dict[str, Workflow] = {}
_VALID_GRAPHS_MAX: Final = 64
_VALID_GRAPH_TEXT_MAX: Final = 64 * 1024


def _pure_json(value: object) -> bool:
    """Only dicts with string keys, lists and JSON scalars (exact types), all the way down."""
    kind = type(value)
    if kind is dict:
        return all(type(k) is str and _pure_json(v) for k, v in value.items())  # type: ignore[attr-defined]
    if kind is list:
        return all(_pure_json(v) for v in value)  # type: ignore[attr-defined]
    return kind in _SCALARS


def workflow_from_mapping(
    data: object,
    *,
    name: str = "workflow",
    catalog: Catalog | None = None,
    strict: bool = True,
    shared: bool = False,
) -> Workflow:
    """Validate ``data`` (a graph, or a ``{"prompt": graph}`` body: :func:`unwrap_prompt`)
    and wrap it (a deep copy); :class:`WorkflowError` lists every problem. ``shared``: the
    caller only reads the graph, so one validated before may be handed out without a copy
    (it must never be changed)."""
    graph = unwrap_prompt(data)
    if catalog is not None or not _pure_json(graph):
        # A tuple, a subclass, a non-string key: equal JSON text would not mean an equal
        # (or equally valid) graph, so it is validated and copied as it is.
        return _validated(data, name=name, catalog=catalog, strict=strict, owned=False)
    try:
        text = canonical_json(graph)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # not JSON (validation says what is wrong with it)
        return _validated(data, name=name, catalog=None, strict=strict, owned=False)
    if len(text) > _VALID_GRAPH_TEXT_MAX:
        return _validated(data, name=name, catalog=None, strict=strict, owned=False)
    sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
    known = _VALID_GRAPHS.get(sha)
    if known is None:
        known = _validated(data, name=name, catalog=None, strict=strict, owned=False)
        object.__setattr__(known, "_sha256", sha)
        object.__setattr__(known, "_valid", True)
        if len(_VALID_GRAPHS) >= _VALID_GRAPHS_MAX:
            del _VALID_GRAPHS[next(iter(_VALID_GRAPHS))]
        _VALID_GRAPHS[sha] = known
    wf = Workflow(known.graph if shared else _json_copy(known.graph), name)
    for field in ("_sha256", "_roles", "_valid"):
        object.__setattr__(wf, field, getattr(known, field))
    return wf


def _validated(
    data: object, *, name: str, catalog: Catalog | None, strict: bool, owned: bool
) -> Workflow:
    """:func:`workflow_from_mapping`; ``owned``: ``data`` was just parsed here and nobody
    else holds it, so it is wrapped as it is (else a deep copy, the caller may change
    its own afterwards)."""
    data = unwrap_prompt(data)
    problems = validate_graph(data, catalog, strict=strict)
    if problems:
        raise WorkflowError(problems, source=show(name))
    assert isinstance(data, Mapping)
    graph = dict(data) if owned else {nid: _json_copy(node) for nid, node in data.items()}
    return Workflow(graph, name)


def workflow_from_text(
    text: str, *, name: str = "workflow", catalog: Catalog | None = None, strict: bool = True
) -> Workflow:
    """Parse JSON text and validate it."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowError(
            [f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg})"],
            source=show(name),
        ) from exc
    return _validated(data, name=name, catalog=catalog, strict=strict, owned=True)


def load_workflow(
    source: str | os.PathLike[str] | Mapping[str, Any],
    *,
    catalog: Catalog | None = None,
    strict: bool = True,
    shared: bool = False,
) -> Workflow:
    """A workflow from a JSON file path or a dict (the only function here that does I/O);
    ``shared``: see :func:`workflow_from_mapping`."""
    if isinstance(source, Mapping):
        return workflow_from_mapping(source, catalog=catalog, strict=strict, shared=shared)
    path = Path(source)
    where = show(str(path))
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(["file not found: check the path"], source=where) from None
    except IsADirectoryError:
        raise WorkflowError(["is a directory, not a workflow file"], source=where) from None
    except UnicodeDecodeError as exc:
        raise WorkflowError([f"not UTF-8 text ({exc.reason})"], source=where) from exc
    except OSError as exc:
        raise WorkflowError([f"cannot read it ({exc.strerror or exc})"], source=where) from exc
    return workflow_from_text(text, name=path.name, catalog=catalog, strict=strict)


# ------------------------------------------------------------------------------- roles


@attrs.frozen
class Roles:
    """Node ids of the CONJURE workflow's roles (None when the graph has no such node)."""

    input_image: str | None = None
    prompt: str | None = None
    depth_image: str | None = None
    mesh: str | None = None


def _first(graph: Mapping[str, Any], classes: Iterable[str]) -> str | None:
    wanted = set(classes)
    ids = [nid for nid, node in graph.items() if _class(node) in wanted]
    return min(ids, key=node_sort_key) if ids else None


def conjure_roles(graph: Mapping[str, Any]) -> Roles:
    """Roles by ``_meta.title`` (INPUTIMAGE, POSITIVECLIP, EXPORT IMAGE, EXPORTGLB), else by
    class (the first LoadImage, text encoder, SaveImage, SaveGLB in node order)."""
    by_title: dict[str, str] = {}
    for nid in sorted(graph, key=node_sort_key):
        node = graph[nid]
        title = _title(node) if isinstance(node, Mapping) else None
        for role, wanted in ROLE_TITLES.items():
            if title is not None and title.strip().upper() == wanted and role not in by_title:
                by_title[role] = nid
    return Roles(
        input_image=by_title.get("input_image") or _first(graph, IMAGE_LOADER_CLASSES),
        prompt=by_title.get("prompt") or _first(graph, TEXT_ENCODER_INPUTS),
        depth_image=by_title.get("depth_image") or _first(graph, ("SaveImage",)),
        mesh=by_title.get("mesh") or _first(graph, ("SaveGLB",)),
    )


def seed_inputs(graph: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(node_id, input)`` of every literal seed input (KSampler ``seed``, ``noise_seed``)."""
    found: list[tuple[str, str]] = []
    for nid in sorted(graph, key=node_sort_key):
        inputs = _inputs(graph[nid])
        found.extend(
            (nid, name)
            for name in SEED_INPUTS
            if isinstance(inputs.get(name), int) and not isinstance(inputs.get(name), bool)
        )
    return found


# ----------------------------------------------------------------------------- bindings


def parse_value(text: str) -> Any:
    """JSON when ``text`` parses as JSON (``true``, ``20``, ``0.5``, ``"x"``, ``[1, 2]``),
    else the text itself as a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_set(text: str) -> tuple[str, Any]:
    """``"NODE.INPUT=VALUE"`` -> ``("NODE.INPUT", value)``; a malformed one is a
    :class:`WorkflowError` naming it."""
    key, sep, raw = text.partition("=")
    node, dot, name = key.strip().rpartition(".")
    if not sep or not dot or not node or not name:
        raise WorkflowError([f"--set {text!r}: use NODE.INPUT=VALUE (e.g. 20.steps=30)"])
    return f"{node}.{name}", parse_value(raw)


def _split(key: str) -> tuple[str, str]:
    node, _, name = key.rpartition(".")
    return node, name


def validate_bindings(
    graph: Mapping[str, Any], bindings: Mapping[str, str], catalog: Catalog | None = None
) -> list[str]:
    """Problems of ``bindings`` (``"NODE.INPUT"`` -> JSON text) against ``graph``: a missing
    node, an input the node does not have (per its inputs or the catalog), bad JSON."""
    problems: list[str] = []
    for key in sorted(bindings):
        node_id, name = _split(key)
        if not node_id or not name:
            problems.append(f"binding {key!r}: use NODE.INPUT")
            continue
        node = graph.get(node_id)
        if node is None:
            problems.append(f"binding {show(key)}: no node {node_id!r} in the workflow")
            continue
        cls = _class(node)
        spec = catalog.get(cls) if catalog is not None and cls is not None else None
        if name not in _inputs(node) and not (spec is not None and spec.accepts(name)):
            have = ", ".join(show(n) for n in sorted(_inputs(node))) or "none"
            problems.append(
                f"binding {show(key)}: node {show(node_id)} ({show(cls)}) has no input"
                f" {name!r} (it has: {have})"
            )
        try:
            json.loads(bindings[key])
        except (json.JSONDecodeError, TypeError):
            problems.append(f"binding {show(key)}: value is not JSON text")
    return problems


def bindings_for(
    workflow: Workflow,
    *,
    image: str | None = None,
    prompt: str | None = None,
    sets: Sequence[str] = (),
    seed: int | None = None,
    catalog: Catalog | None = None,
    strict: bool = True,
) -> dict[str, str]:
    """Resolve a job's inputs into bindings (``"NODE.INPUT"`` -> JSON text).

    ``image`` (the name ComfyUI stored an upload under) goes into the input-image node's
    ``image``; ``prompt`` into every prompt input of the prompt node (``clip_l`` and
    ``t5xxl`` for CLIPTextEncodeFlux, ``text`` for CLIPTextEncode); ``seed`` into every
    literal seed input; then each ``--set NODE.INPUT=VALUE`` (applied last, so it wins).
    Every problem is reported at once in a :class:`WorkflowError`; ``strict`` as in
    :func:`validate_graph` (classes the catalog does not know).
    """
    graph = workflow.graph
    roles = workflow.roles()
    problems: list[str] = []
    out: dict[str, Any] = {}
    if image is not None:
        if roles.input_image is None:
            problems.append("--image: the workflow has no LoadImage node to take it")
        else:
            out[f"{roles.input_image}.image"] = image
    if prompt is not None:
        node_id = roles.prompt
        cls = workflow.class_of(node_id) if node_id is not None else None
        targets = TEXT_ENCODER_INPUTS.get(cls or "")
        if node_id is None or not targets:
            problems.append("--prompt: the workflow has no text-encode node to take it")
        else:
            for name in targets:
                out[f"{node_id}.{name}"] = prompt
    if seed is not None:
        for node_id, name in seed_inputs(graph):
            out[f"{node_id}.{name}"] = seed
    for text in sets:
        try:
            key, value = parse_set(text)
        except WorkflowError as exc:
            problems.extend(exc.problems)
            continue
        out[key] = value
    encoded = {key: json.dumps(value, ensure_ascii=False) for key, value in out.items()}
    binding_problems = validate_bindings(graph, encoded, catalog)
    problems.extend(binding_problems)
    if not binding_problems and not (
        catalog is None
        and all(type(value) in _LITERALS for value in out.values())
        and _valid_as_is(workflow)
    ):
        # A bound value may itself be a link (a 2-item list): check the graph it makes.
        # Literal values (without a catalog) change no problem of a graph that has none:
        # a literal input is never one, and adds no link (the check then runs once per
        # workflow, not per job: issue 16).
        problems.extend(validate_graph(apply_bindings(graph, encoded), catalog, strict=strict))
    if problems:
        raise WorkflowError(problems, source=workflow.name)
    return encoded


def _valid_as_is(workflow: Workflow) -> bool:
    """Whether ``workflow``'s graph has no problem without a catalog (found once per
    Workflow instance)."""
    if not workflow._valid:
        object.__setattr__(workflow, "_valid", not validate_graph(workflow.graph))
    return workflow._valid


def apply_bindings(graph: Mapping[str, Any], bindings: Mapping[str, str]) -> dict[str, Any]:
    """``graph`` with every binding's value injected (bindings must have been validated:
    :func:`validate_bindings`); ``graph`` itself is left as it is.

    Copy-on-write: a new top-level dict, and a new node dict and ``inputs`` dict for each
    node a binding changes; every other node is the *same object* as in ``graph``. The
    result is to be read (validated, checked, encoded to JSON), never changed in place.
    Equal to binding a deep copy, without copying the nodes it does not touch (a job
    binds a few inputs of a graph of tens or hundreds of nodes)."""
    prompt: dict[str, Any] = dict(graph)
    copied: set[str] = set()
    for key, text in bindings.items():
        node_id, name = _split(key)
        if node_id in copied:
            inputs = prompt[node_id]["inputs"]
        else:
            node = dict(prompt[node_id])
            inputs = dict(node.get("inputs", {}))
            node["inputs"] = inputs
            prompt[node_id] = node
            copied.add(node_id)
        inputs[name] = json.loads(text)
    return prompt


_SCALARS: Final = frozenset({str, int, float, bool, type(None)})


def _json_copy(value: Any) -> Any:
    """A deep copy of a JSON value (dicts, lists, scalars), several times cheaper than
    :func:`copy.deepcopy` (no memo, no dispatch table); any other type (a subclass, a
    tuple...) is deep-copied as before, so the result equals ``copy.deepcopy(value)``.
    Recursion depth is the value's nesting (a graph's is a few levels)."""
    kind = type(value)
    if kind is dict:
        return {k: _json_copy(v) for k, v in value.items()}
    if kind is list:
        return [_json_copy(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)
