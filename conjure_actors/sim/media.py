"""Small valid files made without numpy or Pillow: PNG images and binary glTF meshes.

Tests and the simulators use these as input images (the simulated ComfyUI's ``input/``
folder, uploads in tests) and the ComfyUI simulator's ``SaveGLB`` writes the mesh. They are
valid files (a PNG viewer or a glTF loader opens them) and deterministic: the same
``digest`` always gives the same bytes. (Saved images are encoded by the simulated nodes
with Pillow, at the size the graph asks for: see ``comfyui_nodes.encode_png``.)

- PNG: 8-bit RGB, no interlace, one IDAT chunk compressed with zlib, CRCs computed with
  ``zlib.crc32``.
- GLB: glTF 2.0 binary container: 12-byte header (``glTF``, version 2, total length), a JSON
  chunk padded with spaces and a BIN chunk padded with zeros, both 4-byte aligned. The mesh is
  a tetrahedron whose vertices are nudged by the digest.
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from typing import Final

__all__ = [
    "GLB_MAGIC",
    "PNG_SIGNATURE",
    "png_size",
    "write_glb",
    "write_png",
]

PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"
GLB_MAGIC: Final = b"glTF"


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def write_png(width: int, height: int, digest: bytes, *, noise: bool = False) -> bytes:
    """A valid RGB PNG of ``width`` x ``height`` from ``digest``.

    Normally each row is one colour taken from the digest and shifted by the row number, so
    that the file is cheap to build (row bytes are repeated, not computed per pixel) yet
    differs for every digest. ``noise`` fills the pixels with SHAKE-256 output instead:
    incompressible, like ``ImageAddNoise`` (a 1024x1024 noise PNG is about 3 MB).
    """
    w = max(1, int(width))
    h = max(1, int(height))
    seed = digest or b"\x00"
    if noise:
        pixels = hashlib.shake_256(seed).digest(3 * w * h)
        stride = 3 * w
        raw = b"".join(b"\x00" + pixels[y * stride : (y + 1) * stride] for y in range(h))
    else:
        rows = []
        for y in range(h):
            r = seed[y % len(seed)]
            g = seed[(y * 7 + 3) % len(seed)]
            b = (seed[(y * 13 + 5) % len(seed)] + y) & 0xFF
            rows.append(b"\x00" + bytes((r, g, b)) * w)
        raw = b"".join(rows)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", ihdr)
        + _chunk(b"IDAT", zlib.compress(raw, 1))
        + _chunk(b"IEND", b"")
    )


def png_size(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` from a PNG's IHDR, or ``None`` if ``data`` is not a PNG."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return int(width), int(height)


def _pad(data: bytes, filler: bytes) -> bytes:
    return data + filler * (-len(data) % 4)


def write_glb(digest: bytes) -> bytes:
    """A valid glTF 2.0 binary file holding one tetrahedron shaped by ``digest``."""
    seed = digest or b"\x00"
    nudge = [(seed[i % len(seed)] / 255.0 - 0.5) * 0.2 for i in range(12)]
    base = [(0.0, 0.0, 0.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]
    vertices = [
        (x + nudge[3 * i], y + nudge[3 * i + 1], z + nudge[3 * i + 2])
        for i, (x, y, z) in enumerate(base)
    ]
    indices = [0, 2, 1, 0, 1, 3, 0, 3, 2, 1, 2, 3]
    positions = b"".join(struct.pack("<3f", *v) for v in vertices)
    index_bytes = _pad(struct.pack("<12H", *indices), b"\x00")
    # Round-trip through float32 so that min/max match the stored values exactly.
    stored = [struct.unpack("<3f", struct.pack("<3f", *v)) for v in vertices]
    gltf = {
        "asset": {"version": "2.0", "generator": "conjure_actors.sim"},
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"mesh": 0}],
        "meshes": [{"primitives": [{"attributes": {"POSITION": 1}, "indices": 0}]}],
        "buffers": [{"byteLength": len(index_bytes) + len(positions)}],
        "bufferViews": [
            {"buffer": 0, "byteOffset": 0, "byteLength": 24, "target": 34963},
            {
                "buffer": 0,
                "byteOffset": len(index_bytes),
                "byteLength": len(positions),
                "target": 34962,
            },
        ],
        "accessors": [
            {"bufferView": 0, "componentType": 5123, "count": 12, "type": "SCALAR"},
            {
                "bufferView": 1,
                "componentType": 5126,
                "count": 4,
                "type": "VEC3",
                "min": [min(v[k] for v in stored) for k in range(3)],
                "max": [max(v[k] for v in stored) for k in range(3)],
            },
        ],
    }
    json_chunk = _pad(json.dumps(gltf, separators=(",", ":")).encode(), b" ")
    bin_chunk = _pad(index_bytes + positions, b"\x00")
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    return (
        GLB_MAGIC
        + struct.pack("<II", 2, total)
        + struct.pack("<I", len(json_chunk))
        + b"JSON"
        + json_chunk
        + struct.pack("<I", len(bin_chunk))
        + b"BIN\x00"
        + bin_chunk
    )
