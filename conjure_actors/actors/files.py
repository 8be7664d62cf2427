"""Small local file operations of the actors (inputs kept for resume, outputs written).

They run inline, not in a worker thread: the files are small (an input sketch, a PNG, a
mesh), and a worker thread would let ``trio.testing.MockClock`` jump simulated time forward
while the thread runs (autojump sees every task blocked), which makes runs under the
property harness and the benchmarks non-deterministic. Outputs are written to a ``.part``
file and renamed, so a crash never leaves a truncated output under its final name.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def read_bytes(path: Path) -> bytes:
    """The file's bytes (``OSError`` if it cannot be read)."""
    return path.read_bytes()


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a ``.part`` file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def keep_input(folder: Path, name: str, data: bytes) -> Path:
    """Store an input under ``folder/name`` once (content-addressed names never change)."""
    target = folder / name
    if not target.exists():
        write_atomic(target, data)
    return target


def intact(path: Path, sha256: str) -> bool:
    """True if ``path`` exists and its bytes hash to ``sha256``."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() == sha256
    except OSError:
        return False
