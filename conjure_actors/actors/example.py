"""The bundled example: the CONJURE workflow and a small sketch image, made on the spot.

``run`` with no arguments uses these. The sketch is drawn deterministically (a fox-like
outline: head circle, two ears, a tail curve) into a 128x128 grayscale PNG written with
``zlib`` alone, so the package ships no binary asset and the image's sha256 never changes.
"""

from __future__ import annotations

import functools
import math
import struct
import zlib
from importlib import resources
from typing import Final

DEFAULT_WORKFLOW: Final = "conjure_flux_mesh.json"
DEFAULT_PROMPT: Final = "a carved wooden fox"
SKETCH_NAME: Final = "sketch.png"
_SIZE: Final = 128


def bundled_workflows() -> dict[str, bytes]:
    """Every workflow shipped in ``conjure_actors/workflows/``: file name -> JSON bytes."""
    folder = resources.files("conjure_actors.workflows")
    return {
        entry.name: entry.read_bytes()
        for entry in sorted(folder.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".json")
    }


def bundled_workflow(name: str = DEFAULT_WORKFLOW) -> bytes:
    """One bundled workflow's JSON bytes."""
    return resources.files("conjure_actors.workflows").joinpath(name).read_bytes()


def _png(width: int, height: int, rows: list[bytes]) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    raw = b"".join(b"\x00" + row for row in rows)  # filter type 0 per row
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )


@functools.cache
def example_sketch_png() -> bytes:
    """A 128x128 grayscale PNG: black strokes on white, the same bytes every time."""
    pixels = [[255] * _SIZE for _ in range(_SIZE)]

    def dot(x: float, y: float) -> None:
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                px, py = round(x) + dx, round(y) + dy
                if 0 <= px < _SIZE and 0 <= py < _SIZE:
                    pixels[py][px] = 0

    def line(x0: float, y0: float, x1: float, y1: float) -> None:
        steps = int(max(abs(x1 - x0), abs(y1 - y0))) + 1
        for i in range(steps + 1):
            t = i / steps
            dot(x0 + (x1 - x0) * t, y0 + (y1 - y0) * t)

    for i in range(180):  # head
        a = 2 * math.pi * i / 180
        dot(64 + 30 * math.cos(a), 70 + 26 * math.sin(a))
    line(40, 52, 46, 22)  # left ear
    line(46, 22, 58, 45)
    line(88, 52, 82, 22)  # right ear
    line(82, 22, 70, 45)
    dot(53, 66)  # eyes
    dot(75, 66)
    line(60, 82, 64, 86)  # snout
    line(64, 86, 68, 82)
    for i in range(60):  # tail
        t = i / 60
        dot(96 + 24 * t, 100 - 40 * t * t)
    return _png(_SIZE, _SIZE, [bytes(row) for row in pixels])
