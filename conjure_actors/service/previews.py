"""The latest preview image of each running job, for the SSE ``preview`` event.

ComfyUI sends previews as binary WebSocket frames (a sampler's latent preview, a
SaveImageWebsocket image): the job's WorkflowActor hands each to :meth:`Previews.put`
(through the runtime's ``JobSide``). A preview is not an event: it lives in memory only,
one per job (the newest replaces the older), and is dropped when the job ends. The API
sends JPEG: a PNG (or WebP) frame is re-encoded once, in a worker thread, the first time a
stream sends it, and the JPEG is kept beside it for every other stream.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any

import attrs
import trio

__all__ = ["JPEG_QUALITY", "Preview", "Previews", "to_jpeg"]

log = logging.getLogger("conjure_actors.service")

JPEG_QUALITY: int = 85
MAX_PREVIEW_PIXELS: int = 4096 * 4096
"""A frame bigger than this is not decoded (Pillow's bomb guard is about this size too)."""


@attrs.define(eq=False)
class Preview:
    """One preview frame of a job: ``seq`` grows with each frame of that job."""

    seq: int
    node_id: str
    image_type: str | None
    data: bytes = attrs.field(repr=lambda d: f"<{len(d)} bytes>")
    jpeg: bytes | None = attrs.field(default=None, repr=False)
    failed: bool = False


def to_jpeg(data: bytes, image_type: str | None) -> bytes | None:
    """``data`` as JPEG (as it is when it already is one); None when it is no image."""
    if (image_type is not None and "jpeg" in image_type.lower()) or data[:3] == b"\xff\xd8\xff":
        return data
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_PREVIEW_PIXELS:
                return None
            rgb = image.convert("RGB")
        out = io.BytesIO()
        rgb.save(out, "JPEG", quality=JPEG_QUALITY)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        log.debug("a preview frame is not an image Pillow reads: %s", type(exc).__name__)
        return None
    return out.getvalue()


class Previews:
    """The newest preview of each running job (see the module docstring)."""

    def __init__(self) -> None:
        self._latest: dict[str, Preview] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._latest)

    def put(self, job_id: str, node: str | None, image_type: str | None, data: bytes) -> None:
        """Keep ``data`` as ``job_id``'s newest preview (called from the job's actor)."""
        self._seq += 1
        self._latest[job_id] = Preview(self._seq, node or "", image_type, data)

    def latest(self, job_id: str) -> Preview | None:
        return self._latest.get(job_id)

    def forget(self, job_id: str) -> None:
        """The job ended: its preview goes."""
        self._latest.pop(job_id, None)

    async def payload(self, preview: Preview) -> dict[str, Any] | None:
        """The ``PreviewEvent`` of ``preview`` (None: the frame is no image we can send)."""
        if preview.jpeg is None and not preview.failed:
            jpeg = await trio.to_thread.run_sync(to_jpeg, preview.data, preview.image_type)
            if jpeg is None:
                preview.failed = True
            else:
                preview.jpeg = jpeg
        if preview.jpeg is None:
            return None
        return {
            "node_id": preview.node_id,
            "content_type": "image/jpeg",
            "data_base64": base64.b64encode(preview.jpeg).decode("ascii"),
        }
