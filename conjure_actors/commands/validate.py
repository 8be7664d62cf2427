"""``python -m conjure_actors validate WORKFLOW.json [--set NODE.INPUT=VALUE ...]``.

Checks an API-format workflow (and the inputs a run would bind into it) without running
anything: exit 0 with a one-line summary, or exit 2 with every problem listed. These are the
checks ``run`` makes before it launches anything (:func:`check_before_launch`, the
pre-flight of :mod:`conjure_actors.domain.preflight`), said the same way.

Node knowledge comes from a catalog in ComfyUI's ``/object_info`` format (:class:`Target`):
``--object-info FILE`` (a dump of a real server's ``GET /object_info``), ``--comfyui-url
URL`` (fetched once) or ``--workflow-version ID`` (the catalogue recorded for that RunComfy
workflow version: :func:`runcomfy_target`) know the target exactly: unknown classes and
values outside a combo's choices are errors. Else the simulator's built-in catalog, which
cannot know custom nodes or the model files of the user's server: those classes are only
checked for structure and combo choices are not checked (a note says so); numbers, booleans
and seeds always are.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs

from conjure_actors.config import Config
from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.preflight import preflight, raise_problems
from conjure_actors.domain.workflow import (
    Catalog,
    Workflow,
    catalog_from_object_info,
    load_workflow,
    problem_lines,
    show,
    unknown_classes,
    validate_graph,
)
from conjure_actors.errors import UsageError

HELP = "check a workflow (and its input bindings) without running it"

EXIT_OK = 0
EXIT_INVALID = 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workflow", metavar="WORKFLOW.json", help="an API-format workflow")
    parser.add_argument(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="NODE.INPUT=VALUE",
        help="override an input (VALUE is JSON when it parses, else a string); repeatable",
    )
    parser.add_argument(
        "--image",
        metavar="PATH",
        help="an image file, read and checked as `run --image` reads it (it must decode,"
        " under the upload limit), bound into the LoadImage by its file name (an image"
        " already on the server: --set NODE.image=NAME)",
    )
    parser.add_argument("--prompt", metavar="TEXT", help="bind a prompt into the text encoder")
    parser.add_argument("--seed", type=int, help="bind a seed (0 to 2**64-1) into every seed input")
    parser.add_argument(
        "--object-info",
        metavar="FILE",
        help="node catalog: a JSON dump of a ComfyUI server's GET /object_info",
    )
    parser.add_argument(
        "--comfyui-url",
        metavar="URL",
        help="node catalog: GET /object_info of this ComfyUI (the one `run --comfyui-url` uses)",
    )
    parser.add_argument(
        "--workflow-version",
        metavar="ID",
        help="node catalog: the one recorded for this RunComfy workflow version (what `run"
        " --workflow-version` checks against; `machine up` records it)",
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config (default ./conjure.toml)")
    parser.add_argument(
        "--no-catalog",
        action="store_true",
        help="check structure only (output nodes from a built-in list)",
    )


def load_object_info(path: str) -> dict[str, Any]:
    """The ``/object_info`` mapping in ``path`` (also accepts a capture ``{"body": {...}}``)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"--object-info {path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--object-info {path}: not a readable JSON file ({exc})") from exc
    if isinstance(data, dict) and isinstance(data.get("body"), dict) and "status" in data:
        data = data["body"]
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UsageError(
            f"--object-info {path}: expected the JSON object of GET /object_info"
            " (class name -> node info)"
        )
    return data


def fetch_object_info(url: str) -> dict[str, Any] | None:
    """``GET /object_info`` of the ComfyUI at ``url`` (None when it does not answer: the run
    says so itself, with its own one line)."""
    import httpx

    try:
        with httpx.Client(timeout=30.0) as http:
            answer = http.get(url.rstrip("/") + "/object_info")
        answer.raise_for_status()
        data = answer.json()
    except (httpx.HTTPError, ValueError):
        return None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return None
    return data


@attrs.frozen
class Target:
    """The node catalogue a workflow is checked against, and how far it can be trusted."""

    catalog: Catalog | None
    strict: bool
    """Unknown classes are errors (the catalogue is the target's own)."""
    choices: bool
    """A combo's choices are checked (the target's own model files, samplers...)."""
    note: str | None = None
    """What could not be checked, said once (None: everything was)."""
    note_always: bool = False
    """Say the note even when every class of the workflow is in the catalogue."""


def bundled_target(why: str) -> Target:
    """The simulator's catalogue standing in for a server we cannot ask."""
    return Target(
        default_catalog(),
        strict=False,
        choices=False,
        note=f"{why}: checked against the bundled node catalogue (ComfyUI core nodes and"
        " the CONJURE workflow's); custom nodes are checked for structure only and model"
        " file names are not checked",
    )


def check_comfyui_url(url: str) -> None:
    """A ``--comfyui-url`` must be an http(s) URL with a host (said before anything starts;
    the message shows no path, query or credentials: they may hold a token)."""
    from conjure_actors.config import comfyui_url_problem

    problem = comfyui_url_problem(url)
    if problem is not None:
        raise UsageError(f"--comfyui-url: {problem}")


def comfyui_target(url: str) -> Target:
    """``/object_info`` of the user's ComfyUI, fetched once."""
    from conjure_actors.clients.comfyui import origin_of

    check_comfyui_url(url)
    info = fetch_object_info(url)
    if info is None:
        why = f"the ComfyUI at {origin_of(url)} did not give its /object_info"
        return attrs.evolve(bundled_target(why), note_always=True)
    return Target(catalog_from_object_info(info), strict=True, choices=True)


def run_target(config: Config) -> Target:
    """What ``run`` checks against: the user's ComfyUI's ``/object_info``, the catalogue
    recorded for the RunComfy workflow version, or the simulator's own."""
    if config.mode == "comfyui" and config.comfyui_url:
        return comfyui_target(config.comfyui_url)
    if config.mode == "runcomfy":
        return runcomfy_target(config)
    return Target(default_catalog(), strict=True, choices=True)


# RunComfy's API cannot list the nodes of a workflow version: only a running machine of it
# can (its ComfyUI's /object_info). So the catalogue of a version is fetched from the dev
# machine (`machine up`) when one of that version is up, and kept on disk beside its state
# file, one JSON file per version; later runs check against it with no machine at all.
CATALOGS_DIR: Final = "catalogs"


def catalogue_path(config: Config, version: str) -> Path:
    """Where the catalogue of workflow ``version`` is kept (a safe file name for any id).
    RunComfy's own versions are kept as CATALOGS_DIR/<version>.json; those of another
    service (a simulator's, on its loopback URL) under a folder of their own, keyed by the
    service's host and account: a simulated version never overwrites RunComfy's of the same
    id (the port is left out: a simulator's changes from run to run)."""
    import hashlib
    from urllib.parse import urlsplit

    from conjure_actors.commands.machine import state_path
    from conjure_actors.config import DEFAULT_RUNCOMFY_BASE_URL

    safe = version if version.replace("-", "").replace("_", "").isalnum() else None
    name = safe or hashlib.sha256(version.encode()).hexdigest()[:32]
    folder = state_path(config).parent / CATALOGS_DIR
    base = config.runcomfy.base_url
    if base.rstrip("/") != DEFAULT_RUNCOMFY_BASE_URL:
        parts = urlsplit(base)
        where = f"{parts.scheme}://{(parts.hostname or '').lower()}|{config.runcomfy.user_id}"
        folder = folder / hashlib.sha256(where.encode()).hexdigest()[:16]
    return folder / f"{name}.json"


def _dev_machine_of(config: Config, version: str | None) -> tuple[str, str] | None:
    """(workflow version, URL) of the recorded dev machine, if its lease has not run out
    and it runs ``version`` (any, when None). The URL is a secret: it is only fetched."""
    import time

    from conjure_actors.commands.machine import read_dev_machine, state_path

    try:
        dev = read_dev_machine(state_path(config))
    except UsageError:
        return None  # `run` says what is wrong with the state file itself
    if dev is None or not dev.url or (version and dev.workflow_version != version):
        return None
    if dev.estimated_stopping_at is not None and dev.estimated_stopping_at < time.time():
        return None
    return dev.workflow_version, dev.url


def read_catalogue(path: Path) -> dict[str, Any] | None:
    """The ``/object_info`` kept in ``path`` (None: none, or damaged)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None  # a damaged cache is not the user's input: fall back, it is rewritten
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        return None
    return data


def write_catalogue(path: Path, info: Mapping[str, Any]) -> None:
    """Keep ``info`` in ``path`` (0600, atomically); a failure is a note, not an error."""
    from conjure_actors.actors.files import write_atomic

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(info, separators=(",", ":")).encode(), mode=0o600)
    except OSError as exc:
        print(f"note: could not keep the node catalogue in {path}: {exc.strerror}", file=sys.stderr)


def runcomfy_target(config: Config) -> Target:
    """The catalogue of the workflow version: fetched from a dev machine of that version
    (and kept), else the one kept from an earlier fetch, else the bundled one (said)."""
    version = config.runcomfy.workflow_version or None
    dev = _dev_machine_of(config, version)
    if dev is not None:
        version = dev[0]
        info = fetch_object_info(dev[1])
        if info is not None:
            write_catalogue(catalogue_path(config, version), info)
            return Target(catalog_from_object_info(info), strict=True, choices=True)
    if version:
        kept = read_catalogue(catalogue_path(config, version))
        if kept is not None:
            return Target(catalog_from_object_info(kept), strict=True, choices=True)
    label = f"workflow version {version}" if version else "RunComfy"
    return bundled_target(
        f"{label}: no node catalogue recorded yet (a run records it from its first machine"
        " and checks each prompt against it before submitting; so does `machine up`)"
    )


def check_before_launch(
    workflow: Workflow,
    target: Target,
    *,
    image: bytes | None = None,
    image_name: str | None = None,
    image_binding: str | None = None,
    prompt: str | None = None,
    sets: Sequence[str] = (),
    seed: int | None = None,
    jobs: int = 1,
) -> Mapping[str, str]:
    """The pre-flight of a run on ``target``: every problem in one :class:`WorkflowError`
    (exit 2, one line each), else the bindings. ``run`` and ``validate`` both call it."""
    problems = validate_graph(workflow.graph, target.catalog, strict=target.strict)
    try:
        checked = preflight(
            workflow,
            catalog=target.catalog,
            strict=target.strict,
            choices=target.choices,
            image=image,
            image_name=image_name,
            image_binding=image_binding,
            prompt=prompt,
            sets=sets,
            seed=seed,
            jobs=jobs,
        )
    except WorkflowError as exc:
        problems.extend(p for p in exc.problems if p not in problems)
    raise_problems(problems, source=show(workflow.name))
    return checked.bindings


def target_note(workflow: Workflow, target: Target) -> str | None:
    """The note to print once: what the target's catalogue could not check."""
    if target.catalog is None or target.strict:
        return target.note
    unknown = unknown_classes(workflow.graph, target.catalog)
    if not unknown:
        return target.note if target.note_always else None
    listed = ", ".join(show(cls) for cls in unknown)
    return f"{target.note} (not in it: {listed})"


def default_catalog() -> Catalog | None:
    """The simulator's catalog, if the simulator package provides one."""
    try:
        module = importlib.import_module("conjure_actors.sim.catalog")
    except ImportError:
        return None
    info = getattr(module, "OBJECT_INFO", None)
    return catalog_from_object_info(info) if isinstance(info, dict) else None


def _summary(workflow: Workflow, catalog: Catalog | None, bindings: dict[str, str]) -> str:
    graph = workflow.graph
    outs = ", ".join(
        f"{show(nid)} ({show(workflow.class_of(nid))})" for nid in workflow.outputs(catalog)
    )
    roles = workflow.roles()
    named = [
        f"{label}={show(nid)}"
        for label, nid in (
            ("image", roles.input_image),
            ("prompt", roles.prompt),
            ("depth", roles.depth_image),
            ("mesh", roles.mesh),
        )
        if nid is not None
    ]
    parts = [f"ok: {show(workflow.name)}: {len(graph)} nodes", f"outputs {outs}"]
    if named:
        parts.append("roles " + " ".join(named))
    if bindings:
        parts.append(f"{len(bindings)} bindings")
    parts.append(f"sha256 {workflow.sha256[:12]}")
    return "; ".join(parts)


def _target(args: argparse.Namespace) -> Target:
    if args.object_info:
        catalog = catalog_from_object_info(load_object_info(args.object_info))
        return Target(catalog, strict=True, choices=True)
    if args.comfyui_url:
        return comfyui_target(args.comfyui_url)
    if args.workflow_version:
        from conjure_actors.config import load_config

        flags = {"runcomfy.workflow_version": args.workflow_version}
        return runcomfy_target(load_config(config_file=args.config, flags=flags))
    if args.no_catalog:
        return Target(None, strict=False, choices=False)
    return bundled_target("no --object-info or --comfyui-url")


def _image(name: str | None) -> tuple[bytes | None, str | None]:
    """The bytes of ``--image`` and the name they are bound by, read as ``run --image``
    reads them: a path that is not a readable file is refused (exit 2), as ``run`` refuses
    it; it is not taken for the name of an image on the server (``run`` cannot run that:
    ``--set NODE.image=NAME`` binds one)."""
    if name is None:
        return None, None
    path = Path(name)
    if path.is_dir():
        raise UsageError(f"--image {show(name)}: is a directory, not an image file")
    try:
        return path.read_bytes(), path.name
    except OSError as exc:
        raise UsageError(f"cannot read image {show(name)}: {exc.strerror or exc}") from None


def main(args: argparse.Namespace) -> int:
    target = _target(args)
    data, binding = _image(args.image)
    try:
        workflow = load_workflow(args.workflow, catalog=target.catalog, strict=target.strict)
        bindings = check_before_launch(
            workflow,
            target,
            image=data,
            image_name=args.image,
            image_binding=binding,
            prompt=args.prompt,
            sets=args.sets,
            seed=args.seed,
        )
    except WorkflowError as exc:
        for line in problem_lines(exc):
            print(line, file=sys.stderr)
        return EXIT_INVALID
    print(_summary(workflow, target.catalog, dict(bindings)))
    note = target_note(workflow, target)
    if note is not None:
        print(f"note: {note}", file=sys.stderr)
    return EXIT_OK
