"""``python -m conjure_actors validate WORKFLOW.json [--set NODE.INPUT=VALUE ...]``.

Checks an API-format workflow (and the inputs a run would bind into it) without running
anything: exit 0 with a one-line summary, or exit 2 with every problem listed.

Node knowledge comes from a catalog in ComfyUI's ``/object_info`` format: ``--object-info
FILE`` (a dump of a real server's ``GET /object_info``; unknown classes are errors), else the
simulator's built-in catalog (which cannot know custom nodes: their classes are only
checked for structure, and listed in a note).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

from conjure_actors.domain.errors import WorkflowError
from conjure_actors.domain.workflow import (
    Catalog,
    Workflow,
    bindings_for,
    catalog_from_object_info,
    load_workflow,
    unknown_classes,
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
    parser.add_argument("--image", metavar="NAME", help="bind an image name into the LoadImage")
    parser.add_argument("--prompt", metavar="TEXT", help="bind a prompt into the text encoder")
    parser.add_argument("--seed", type=int, help="bind a seed into every seed input")
    parser.add_argument(
        "--object-info",
        metavar="FILE",
        help="node catalog: a JSON dump of a ComfyUI server's GET /object_info",
    )
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
    outs = ", ".join(f"{nid} ({workflow.class_of(nid)})" for nid in workflow.outputs(catalog))
    roles = workflow.roles()
    named = [
        f"{label}={nid}"
        for label, nid in (
            ("image", roles.input_image),
            ("prompt", roles.prompt),
            ("depth", roles.depth_image),
            ("mesh", roles.mesh),
        )
        if nid is not None
    ]
    parts = [f"ok: {workflow.name}: {len(graph)} nodes", f"outputs {outs}"]
    if named:
        parts.append("roles " + " ".join(named))
    if bindings:
        parts.append(f"{len(bindings)} bindings")
    parts.append(f"sha256 {workflow.sha256[:12]}")
    return "; ".join(parts)


def main(args: argparse.Namespace) -> int:
    strict = False
    catalog: Catalog | None = None
    if args.object_info:
        catalog = catalog_from_object_info(load_object_info(args.object_info))
        strict = True
    elif not args.no_catalog:
        catalog = default_catalog()
    try:
        workflow = load_workflow(args.workflow, catalog=catalog, strict=strict)
        bindings = bindings_for(
            workflow,
            image=args.image,
            prompt=args.prompt,
            sets=args.sets,
            seed=args.seed,
            catalog=catalog,
        )
    except WorkflowError as exc:
        where = f"{exc.source}: " if exc.source else ""
        count = len(exc.problems)
        print(f"error: {where}{count} problem{'s' if count != 1 else ''}:", file=sys.stderr)
        for problem in exc.problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INVALID
    print(_summary(workflow, catalog, bindings))
    if catalog is not None and not strict:
        unknown = unknown_classes(workflow.graph, catalog)
        if unknown:
            print(
                f"note: not in the built-in catalog, checked for structure only: "
                f"{', '.join(unknown)} (use --object-info with your server's /object_info)",
                file=sys.stderr,
            )
    return EXIT_OK
