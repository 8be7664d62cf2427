"""The names a job's outputs may be saved under (pure): a server we do not trust names each
output by a subfolder and a filename; :func:`relative_parts` keeps those that are plain
relative names under the job's folder and refuses the rest (:class:`UnsafeName`: ``..``, an
absolute subfolder, a drive letter, a separator inside the filename, control characters,
an over-long name). Preflight asks the same of a save node's ``filename_prefix``
(``domain.preflight``), before a machine is paid for, as the download asks it after."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from typing import Final

__all__ = [
    "MAX_COMPONENT_BYTES",
    "MAX_RELATIVE_BYTES",
    "UnsafeName",
    "relative_parts",
    "shown_name",
]

# NAME_MAX is 255 bytes on every filesystem we care about; a temporary file beside a
# component adds a prefix and a suffix, so components stay well below it.
MAX_COMPONENT_BYTES: Final = 200
MAX_RELATIVE_BYTES: Final = 1024
_DRIVE: Final = re.compile(r"^[A-Za-z]:")
# Control characters, lone surrogates, line and paragraph separators: a name holding one
# is either an attack or a bug, and would garble every terminal line that shows it.
_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cs", "Zl", "Zp"})


class UnsafeName(ValueError):
    """An output's subfolder or filename cannot be saved safely (the message says why)."""


def _check_component(component: str, what: str) -> str:
    if component in (".", ".."):
        raise UnsafeName(f"{what} {component!r} leaves the output folder")
    if _DRIVE.match(component):
        raise UnsafeName(f"{what} {shown_name(component)} names a drive")
    # Printable ASCII (nearly every name) holds none of the refused characters: the
    # per-character look-up is for the rest.
    if not (component.isascii() and component.isprintable()):
        for char in component:
            if unicodedata.category(char) in _REFUSED_CATEGORIES:
                raise UnsafeName(
                    f"{what} {shown_name(component)} holds a control character (U+{ord(char):04X})"
                )
    if len(component.encode("utf-8")) > MAX_COMPONENT_BYTES:
        raise UnsafeName(
            f"{what} {shown_name(component)} is longer than {MAX_COMPONENT_BYTES} bytes"
        )
    return component


def shown_name(text: str, limit: int = 60) -> str:
    """A name fit for a one-line message: escaped (``ascii``) and cut short."""
    shown = ascii(text)
    return shown if len(shown) <= limit else shown[: limit - 4] + "...'"


def _split(text: str) -> Iterator[str]:
    for part in re.split(r"[/\\]", text):
        if part not in ("", "."):
            yield part


def relative_parts(subfolder: str, filename: str) -> tuple[str, ...]:
    """The path components of an output under its job's folder: the subfolder's, then the
    filename. Raises :class:`UnsafeName` for anything that is not a plain
    relative name: NUL or other control characters, ``..``, an absolute subfolder, a drive
    letter, a separator inside the filename, an empty filename, an over-long name."""
    if subfolder.startswith(("/", "\\")):
        raise UnsafeName(f"subfolder {shown_name(subfolder)} is an absolute path")
    if not filename or filename in (".", ".."):
        raise UnsafeName(f"filename {shown_name(filename)} is not a file name")
    if "/" in filename or "\\" in filename:
        raise UnsafeName(f"filename {shown_name(filename)} holds a path separator")
    parts = [_check_component(p, "subfolder") for p in _split(subfolder)]
    parts.append(_check_component(filename, "filename"))
    if len("/".join(parts).encode("utf-8")) > MAX_RELATIVE_BYTES:
        raise UnsafeName(
            f"output {shown_name(subfolder)}/{shown_name(filename)} is longer than "
            f"{MAX_RELATIVE_BYTES} bytes"
        )
    return tuple(parts)
