"""Pre-flight: everything about a run that can be checked before a machine is launched.

A machine bills from the moment it is Ready, so a job that ComfyUI will refuse must be
refused here, for free: the graph against the node catalogue of its target (classes, links,
required inputs: :func:`~conjure_actors.domain.workflow.validate_graph`), every literal value
against its input's type and range (``INT``/``FLOAT`` min and max, a combo's choices,
``BOOLEAN``; no literal where only a link will do; a save node's ``filename_prefix`` that
leaves the output folder, which ComfyUI refuses only when that node runs, at the end of a
paid graph: :func:`check_values`), the seeds
(:func:`check_seed`) and the input image (:func:`check_image`: an image Pillow, what ComfyUI's
LoadImage opens it with, decodes (PNG, JPEG, WebP, GIF, BMP, TIFF...), under ComfyUI's upload
limit). :func:`preflight` runs
them all and reports every problem at once.

Every problem is one line that names the node id, its class and the input (ids and names are
quoted with :func:`~conjure_actors.domain.workflow.show` when they hold control characters).

The value rules follow what ComfyUI's own validation does to a literal (``int(value)`` for an
``INT``, ``float(value)`` for a ``FLOAT``, the min/max of ``/object_info``, membership in a
combo), and are stricter in two places where ComfyUI would silently run something else than
what was asked: a fraction given to an ``INT`` (``int(20.5)`` is 20) and anything but
``true``/``false`` given to a ``BOOLEAN`` (``bool("false")`` is True).

Pure: bytes and mappings in, problems out (decoding an image's pixels is CPU, not I/O: a
service runs :func:`image_problem` in a worker thread).
"""

from __future__ import annotations

import io
import math
import posixpath
import re
import struct
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.output_names import UnsafeName, relative_parts
from conjure_actors.domain.workflow import (
    Catalog,
    InputConfig,
    Workflow,
    apply_bindings,
    bindings_for,
    is_link,
    node_sort_key,
    show,
    validate_graph,
)

__all__ = [
    "DECODE_PIXELS",
    "IMAGE_FORMATS",
    "MAX_SEED",
    "MAX_UPLOAD_BYTES",
    "OUTPUT_PREFIX",
    "ImageInfo",
    "InputError",
    "Preflight",
    "PromptRefusal",
    "check_image",
    "check_prompt",
    "check_seed",
    "check_value",
    "check_values",
    "decode_problem",
    "image_info",
    "image_problem",
    "output_prefix_problem",
    "output_types",
    "preflight",
    "raise_problems",
]

MAX_SEED: Final = 2**64 - 1
"""The largest seed ComfyUI's samplers take (``KSampler.seed`` max: 0xffffffffffffffff)."""

MAX_UPLOAD_BYTES: Final = 100 * 1024 * 1024
"""ComfyUI's default ``max_upload_size`` (``GET /features``): a larger upload is refused."""

IMAGE_FORMATS: Final = ("PNG", "JPEG", "WebP", "GIF", "BMP")
"""The formats whose header :func:`image_info` reads without Pillow (their declared size is
checked first); any other format Pillow decodes (TIFF, AVIF, TGA...) is accepted too, as
ComfyUI's LoadImage opens whatever Pillow opens."""

_UNIDENTIFIED: Final = (
    "not an image ComfyUI's LoadImage reads (PNG, JPEG, WebP, GIF, BMP, TIFF...),"
    " or one cut short or damaged"
)

_LITERAL_TYPES: Final = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
"""Input types that take a literal value (a widget in ComfyUI's front end)."""

_OTHER_LITERALS: Final = frozenset({"*", "WEBCAM", "LOAD_3D", "LOAD_3D_ANIMATION"})
"""Other types of core nodes whose input takes a literal: ``*`` (any type: ComfyUI passes a
value through), WebcamCapture's ``WEBCAM`` (a file name) and Load3D's ``LOAD_3D``... (the
views its widget rendered)."""

_MADE_CACHE: Final[dict[int, tuple[Catalog, frozenset[str]]]] = {}
_MADE_CACHE_SIZE: Final = 8

_CHOICES_SHOWN: Final = 8
_PLAIN: Final = (str, int, float, list)
"""JSON values that are not a mapping (checked first: an ABC isinstance costs more)."""


# ------------------------------------------------------------------------------ values


def _where(nid: str, cls: str, name: str) -> str:
    return f"node {show(nid)} ({show(cls)}) input {name!r}"


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else _json_like(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _json_like(value: object) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    return repr(value)


def _choices(choices: Sequence[Any]) -> str:
    shown = ", ".join(_shown(c) for c in choices[:_CHOICES_SHOWN])
    if len(choices) > _CHOICES_SHOWN:
        shown += f", ... ({len(choices)} choices)"
    return shown or "none (the server lists no choices)"


def _range(config: InputConfig, value: int | float) -> str | None:
    if config.minimum is not None and value < config.minimum:
        return f"{_shown(value)} is below the minimum {_shown(config.minimum)}"
    if config.maximum is not None and value > config.maximum:
        return f"{_shown(value)} is above the maximum {_shown(config.maximum)}"
    return None


def _takes_a_literal(config: InputConfig, made: frozenset[str] | None) -> bool:
    """Whether an input of ``config``'s type takes a literal value (else only a link). A
    type some node of the catalogue outputs (``made``: ``IMAGE``, ``MODEL``, ``LATENT``...) is
    a link's: a literal there passes ComfyUI's validation and fails the node on the machine.
    A type no node outputs is a widget's (``COMFY_DYNAMICCOMBO_V3``, ``AUDIO_RECORD``, a
    custom node's own), as is any type when the outputs are not known (``made`` None)."""
    kind = config.kind
    if kind in _LITERAL_TYPES or kind in _OTHER_LITERALS or made is None:
        return True
    return not any(one.strip() in made for one in kind.split(","))


def output_types(catalog: Catalog) -> frozenset[str]:
    """Every type some node of ``catalog`` outputs (remembered for the last few catalogues:
    a service checks every submission against the same one)."""
    key = id(catalog)
    hit = _MADE_CACHE.get(key)
    if hit is not None and hit[0] is catalog:
        return hit[1]
    made = frozenset(kind for spec in catalog.values() for kind in spec.outputs)
    if len(_MADE_CACHE) >= _MADE_CACHE_SIZE:
        _MADE_CACHE.pop(next(iter(_MADE_CACHE)))
    _MADE_CACHE[key] = (catalog, made)
    return made


def _link_to(kind: str) -> str:
    types = [show(one.strip()) for one in kind.split(",")]  # "A,B": a link to either
    listed = types[0] if len(types) == 1 else ", ".join(types[:-1]) + " or " + types[-1]
    return f'a link to a node\'s {listed} output (["NODE", INDEX])'


def check_value(
    value: object,
    config: InputConfig,
    *,
    choices: bool = True,
    made: frozenset[str] | None = None,
) -> str | None:
    """What is wrong with a literal ``value`` for an input described by ``config`` (None:
    nothing). ``choices=False`` skips a combo's list (a catalogue that is not the target's
    own cannot know its model files). ``made``: the types the catalogue's nodes output
    (:func:`output_types`); an input of one of them only takes a link and refuses any value."""
    if not _takes_a_literal(config, made):
        return f"needs {_link_to(config.kind)}, not the value {_shown(value)}"
    if not isinstance(value, _PLAIN) and isinstance(value, Mapping) and "__value__" in value:
        value = value["__value__"]
    kind = config.kind
    if kind == "INT":
        number: object = value
        if isinstance(value, str):
            try:
                number = int(value.strip())
            except ValueError:
                return f"expects an integer, got {_shown(value)}"
        if isinstance(number, bool) or not isinstance(number, int | float):
            return f"expects an integer, got {_shown(value)}"
        if isinstance(number, float):
            if not number.is_integer():
                return f"expects an integer, got {_shown(value)} (ComfyUI would cut it)"
            number = int(number)
        return _range(config, number)
    if kind == "FLOAT":
        real: object = value
        if isinstance(value, str):
            try:
                real = float(value.strip())
            except ValueError:
                return f"expects a number, got {_shown(value)}"
        if isinstance(real, bool) or not isinstance(real, int | float):
            return f"expects a number, got {_shown(value)}"
        if isinstance(real, float) and not math.isfinite(real):
            return f"expects a finite number, got {_shown(value)}"
        return _range(config, real)
    if kind == "BOOLEAN":
        if not isinstance(value, bool):
            return f"expects true or false, got {_shown(value)}"
        return None
    if kind == "STRING":
        if not isinstance(value, str | int | float):
            return f"expects text, got {_shown(value)}"
        return None
    if config.choices is not None and choices and not config.image_upload:
        picked = value if config.multiselect and isinstance(value, list) else [value]
        for one in picked:
            try:
                known = one in config.choices
            except TypeError:  # an unhashable value against strings: not a choice
                known = False
            if not known:
                return f"{_shown(one)} is not one of: {_choices(config.choices)}"
    return None


OUTPUT_PREFIX: Final = "filename_prefix"
"""The input by which ComfyUI's save nodes (SaveImage, SaveAnimatedWEBP, SaveGLB, SaveAudio,
SaveLatent...) name their files, relative to its output folder."""


def output_prefix_problem(prefix: str) -> str | None:
    """What is wrong with a save node's ``filename_prefix`` (None: nothing): ComfyUI's
    ``get_save_image_path`` takes the folder of its normalized path under the output folder
    and raises "Saving image outside the output folder is not allowed" when that folder is
    absolute or climbs out with ``..`` (``a/../b`` stays inside). It does so when the node
    runs: after every node before it ran, on a billed machine."""
    normal = posixpath.normpath(prefix)
    folder, name = posixpath.dirname(normal), posixpath.basename(normal)
    if posixpath.isabs(folder) or folder == ".." or folder.startswith("../"):
        return (
            f"{_shown(prefix)} saves outside ComfyUI's output folder, which it refuses only"
            " when this node runs, after the rest of the graph: use a relative name inside"
            " it, e.g. 'conjure/result'"
        )
    if ".." in name:
        # ComfyUI saves it, then its /view refuses any file name holding "..": the output
        # could never be downloaded (each attempt a whole paid run).
        return (
            f"{_shown(prefix)}: ComfyUI would save the file, but its /view refuses a file name"
            " holding '..', so the output could never be downloaded: use another name"
        )
    try:
        # As the download will check the name ComfyUI gives the file (its prefix, a counter,
        # an extension): a drive, a separator in the file name, a control character...
        relative_parts(folder, f"{name}_00001_.png")
    except UnsafeName as exc:
        return (
            f"{_shown(prefix)}: its outputs could not be saved ({exc}), which is found only"
            " once the graph ran: use a plain relative name, e.g. 'conjure/result'"
        )
    return None


def check_values(
    graph: Mapping[str, Any], catalog: Catalog | None, *, choices: bool = True
) -> list[str]:
    """One problem per literal input whose value its class's input would refuse (type,
    range, combo choice; classes the catalogue does not know are not checked), and per save
    node's ``filename_prefix`` that leaves the output folder (:func:`output_prefix_problem`,
    with or without a catalogue). Problems come in node order (:func:`node_sort_key`), then
    input order."""
    found: list[tuple[str, str]] = []
    made = output_types(catalog) if catalog is not None else frozenset()
    for nid, node in graph.items():
        # dict first: an ABC isinstance is ~10x the cost, and a graph is JSON (dicts)
        if not (type(node) is dict or isinstance(node, Mapping)):
            continue
        cls = node.get("class_type")
        inputs = node.get("inputs")
        if not isinstance(cls, str) or not (type(inputs) is dict or isinstance(inputs, Mapping)):
            continue
        prefix = inputs.get(OUTPUT_PREFIX)
        if isinstance(prefix, str) and (bad := output_prefix_problem(prefix)) is not None:
            found.append((nid, f"{_where(nid, cls, OUTPUT_PREFIX)}: {bad}"))
        if catalog is None:
            continue
        spec = catalog.get(cls)
        if spec is None:
            continue
        configs = spec.configs
        for name, value in inputs.items():
            config = configs.get(name)
            if config is None or is_link(value):
                continue
            if value is None and name not in spec.required and not _takes_a_literal(config, made):
                continue  # the node gets None, as for an optional input left unconnected
            problem = check_value(value, config, choices=choices, made=made)
            if problem is not None:
                found.append((nid, f"{_where(nid, cls, name)}: {problem}"))
    if len(found) > 1:  # stable: a node's problems keep their input order
        found.sort(key=lambda item: node_sort_key(item[0]))
    return [problem for _, problem in found]


def check_seed(seed: int | None, *, jobs: int = 1, flag: str = "--seed") -> list[str]:
    """A seed (and the ``jobs - 1`` seeds after it) must lie in 0..2**64-1."""
    if seed is None:
        return []
    last = seed + max(jobs, 1) - 1
    if seed < 0 or last > MAX_SEED:
        what = f"{flag} {_shown(seed)}"
        if jobs > 1 and seed >= 0:
            what += f" with {jobs} jobs (last seed {last})"
        return [f"{what}: a seed is an integer from 0 to {MAX_SEED}"]
    return []


# ------------------------------------------------------------------------------- image


@attrs.frozen
class ImageInfo:
    """What an image file's header says: its format and size in pixels."""

    format: str
    width: int
    height: int


def _png(data: bytes) -> ImageInfo | None:
    if len(data) < 24 or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return ImageInfo("PNG", width, height)


# JPEG start-of-frame markers (baseline, progressive...; not DHT C4, JPG C8, DAC CC).
_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}


def _jpeg(data: bytes) -> ImageInfo | None:
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        if length < 2:
            return None
        if marker in _SOF:
            if i + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[i + 5 : i + 9])
            return ImageInfo("JPEG", width, height)
        i += 2 + length
    return None


def _webp(data: bytes) -> ImageInfo | None:
    chunk = data[12:16]
    if chunk == b"VP8 " and len(data) >= 30 and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack("<HH", data[26:30])
        return ImageInfo("WebP", width & 0x3FFF, height & 0x3FFF)
    if chunk == b"VP8L" and len(data) >= 25 and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return ImageInfo("WebP", (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X" and len(data) >= 30:
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return ImageInfo("WebP", width, height)
    return None


def image_info(data: bytes) -> ImageInfo | None:
    """The format and size a PNG, JPEG, WebP, GIF or BMP header declares (None: none of
    them, or a header cut short)."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return _png(data)
    if data.startswith(b"\xff\xd8"):
        return _jpeg(data)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp(data)
    if data[:6] in (b"GIF87a", b"GIF89a") and len(data) >= 10:
        width, height = struct.unpack("<HH", data[6:10])
        return ImageInfo("GIF", width, height)
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack("<ii", data[18:26])
        return ImageInfo("BMP", abs(width), abs(height))
    return None


_OBJECT_REPR: Final = re.compile(r" ?<[^<>]* (?:object )?at 0x[0-9a-fA-F]+>")
"""A Python object's repr in an exception's text (``<_io.BytesIO object at 0x7f...>``)."""


DECODE_PIXELS: Final = 4096 * 4096
"""The largest image whose pixels :func:`decode_problem` decodes (about 200 MB at the peak
for RGBA); a larger one has its structure and checksums verified only: a full decode of a
100-megapixel PNG took 14 s and 1.2 GB, and a service checks every submission's image."""


def decode_problem(data: bytes) -> str | None:
    """Why Pillow (what ComfyUI's LoadImage opens an image with) cannot decode ``data``'s
    pixels (None: they decode). A header that parses is not enough: a file cut short or
    damaged past it is only found by verifying (PNG's CRCs, to its last chunk) and decoding
    (up to :data:`DECODE_PIXELS`). Pillow's decompression-bomb limit stands (ComfyUI's Pillow
    refuses such an image too); its warning below that limit is not printed. CPU-bound: a
    service calls it in a worker thread."""
    import warnings

    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as image:
                image.verify()  # checksums (PNG's CRCs) without decoding
            with Image.open(io.BytesIO(data)) as image:
                if image.width * image.height <= DECODE_PIXELS:
                    image.load()  # the pixels themselves, as ComfyUI's LoadImage will
    except UnidentifiedImageError:
        return _UNIDENTIFIED
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = _OBJECT_REPR.sub("", str(exc)).strip() or type(exc).__name__
        return f"does not decode ({show(reason)})"
    return None


def image_problem(data: bytes, *, max_bytes: int = MAX_UPLOAD_BYTES) -> str | None:
    """What is wrong with an input image's bytes (None: nothing): empty, over the upload
    limit, a header that declares no pixels, or not an image whose pixels Pillow decodes
    (:func:`decode_problem`). One rule for every door (``run --image``, ``validate``, both
    APIs): what ComfyUI's LoadImage opens (it opens with Pillow) is accepted, whatever its
    format (TIFF, AVIF, TGA... too). Said without naming the file (the caller says where it
    comes from)."""
    if not data:
        return "the file is empty"
    if len(data) > max_bytes:
        return f"{len(data)} bytes is over ComfyUI's upload limit of {max_bytes} bytes"
    info = image_info(data)
    if info is not None and (info.width == 0 or info.height == 0):
        return f"the {info.format} header says {info.width}x{info.height} pixels"
    return decode_problem(data)


def check_image(data: bytes, *, name: str, max_bytes: int = MAX_UPLOAD_BYTES) -> list[str]:
    """Problems of an input image (:func:`image_problem`), said as ``--image NAME: ...``."""
    problem = image_problem(data, max_bytes=max_bytes)
    return [] if problem is None else [f"--image {show(name)}: {problem}"]


# ---------------------------------------------------------------------------- together


class InputError(WorkflowError):
    """Problems of a run's own inputs (``--seed``, ``--image``, ``--set`` syntax), not of
    its graph: said as what they are ("error: --seed -1: ..."), not as the workflow's."""

    def __init__(self, problems: Sequence[str]) -> None:
        super().__init__(problems)
        self.header = f"the inputs have {len(self.problems)} problems:"

    def __str__(self) -> str:
        return "; ".join(self.problems)


def raise_problems(problems: Sequence[str], *, source: str) -> None:
    """Raise ``problems`` (if any): as an :class:`InputError` when every one is about a
    flag (they start with ``--``), else as the workflow's :class:`WorkflowError`."""
    if not problems:
        return
    if all(problem.startswith("--") for problem in problems):
        raise InputError(problems)
    raise WorkflowError(problems, source=source)


@attrs.frozen
class Preflight:
    """What passed the pre-flight: the bindings a job would store."""

    bindings: Mapping[str, str]


def preflight(
    workflow: Workflow,
    *,
    catalog: Catalog | None,
    strict: bool = True,
    choices: bool = True,
    image: bytes | None = None,
    image_name: str | None = None,
    image_binding: str | None = None,
    prompt: str | None = None,
    sets: Sequence[str] = (),
    seed: int | None = None,
    jobs: int = 1,
) -> Preflight:
    """Every check that needs no machine, all problems at once in one
    :class:`WorkflowError` (each a line): the seeds, the image's bytes (``image``, shown as
    ``image_name``), the bindings (``--prompt``, ``--set``, ``--seed``, and
    ``image_binding``, the name an upload would get) and every literal value of the graph
    they make, against ``catalog`` (``strict=False``: classes it does not know are checked
    for structure only; ``choices=False``: a combo's list is not checked)."""
    seed_problems = check_seed(seed, jobs=jobs)
    problems: list[str] = list(seed_problems)
    if image is not None:
        problems.extend(check_image(image, name=image_name or "image"))
    bindings: dict[str, str] = {}
    try:
        bindings = bindings_for(
            workflow,
            image=image_binding,
            prompt=prompt,
            sets=sets,
            seed=None if seed_problems else seed,
            catalog=catalog,
            strict=strict,
        )
    except WorkflowError as exc:
        problems.extend(exc.problems)
    else:
        problems.extend(
            check_values(apply_bindings(workflow.graph, bindings), catalog, choices=choices)
        )
    raise_problems(problems, source=show(workflow.name))
    return Preflight(bindings)


_FIRST_NODE: Final = re.compile(r"^node (\S+?)[ :]")
_REFUSAL_SHOWN: Final = 5


@attrs.frozen
class PromptRefusal:
    """Why a catalogue refuses a prompt: every problem (one line each), and the first node
    they name with its class (None when the first problem names no node)."""

    problems: tuple[str, ...]
    node_id: str | None
    class_type: str | None
    by: str = "the node catalogue"
    """Whose catalogue refused it, as a message names it."""

    @property
    def message(self) -> str:
        """The one line a job fails with: what refused the prompt, and every problem."""
        return f"{self.by} refuses the prompt (not submitted): {self.line()}"

    def line(self) -> str:
        """The problems in one line: the first five, then how many more."""
        shown = "; ".join(self.problems[:_REFUSAL_SHOWN])
        more = len(self.problems) - _REFUSAL_SHOWN
        return shown + (f" (+{more} more)" if more > 0 else "")


def check_prompt(prompt: Mapping[str, Any], catalog: Catalog) -> PromptRefusal | None:
    """The pre-flight of a prompt about to be submitted, against its target's own catalogue
    (strict: an unknown class, a missing input, a value out of range or not one of a
    combo's choices are refused; an uploaded image's name is not a choice to check).
    None: nothing to refuse."""
    problems = validate_graph(prompt, catalog, strict=True)
    problems.extend(p for p in check_values(prompt, catalog) if p not in problems)
    if not problems:
        return None
    found = _FIRST_NODE.match(problems[0])
    node = prompt.get(found.group(1)) if found else None
    cls = node.get("class_type") if isinstance(node, Mapping) else None
    if node is None:  # a problem of the whole graph, or a node id shown quoted
        return PromptRefusal(tuple(problems), None, None)
    return PromptRefusal(tuple(problems), found.group(1) if found else None, show(cls) or None)
