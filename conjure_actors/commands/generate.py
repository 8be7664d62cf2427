"""``python -m conjure_actors generate DIR``: write the bundled example workflows (and the
example sketch image) into DIR, to edit them or run them with ``run DIR/<name>.json``."""

from __future__ import annotations

import argparse
from pathlib import Path

from conjure_actors.actors.example import SKETCH_NAME, bundled_workflows, example_sketch_png
from conjure_actors.errors import UsageError

HELP = "write the bundled example workflows and the example sketch image into DIR"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("dir", metavar="DIR", help="directory to write into (created if needed)")
    parser.add_argument(
        "--force", action="store_true", help="overwrite files that already exist in DIR"
    )


def write_examples(target: Path, *, force: bool = False) -> list[Path]:
    """Write every bundled workflow and the sketch into ``target``; returns the paths."""
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a directory")
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {target}: {exc.strerror}") from None
    files = dict(bundled_workflows())
    files[SKETCH_NAME] = example_sketch_png()
    existing = [name for name in files if (target / name).exists()]
    if existing and not force:
        raise UsageError(
            f"{target / existing[0]} already exists: pass --force to overwrite"
            + (f" ({len(existing)} files)" if len(existing) > 1 else "")
        )
    written = []
    for name, data in files.items():
        path = target / name
        try:
            path.write_bytes(data)
        except OSError as exc:
            raise UsageError(f"cannot write {path}: {exc.strerror}") from None
        written.append(path)
    return written


def main(args: argparse.Namespace) -> int:
    written = write_examples(Path(args.dir), force=args.force)
    for path in written:
        print(path)
    print(
        f"wrote {len(written)} files; try: python -m conjure_actors run "
        f"{Path(args.dir) / 'conjure_flux_mesh.json'} --image {Path(args.dir) / SKETCH_NAME}"
    )
    return 0
