"""The process's standard streams, for the CLI and the commands that end it early."""

from __future__ import annotations

import os
from typing import TextIO


def to_devnull(stream: TextIO) -> None:
    """Point ``stream``'s file descriptor at /dev/null, so that what is left in its buffer
    is flushed there (at exit, or by the next print) instead of failing again: for a stream
    whose reader left (a broken pipe) or that cannot be written (``2>/dev/full``). A stream
    that is not a file (replaced in-process, as tests do) is left alone."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # not a file: nothing to flush to
        return
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, fd)
    finally:
        os.close(null)
