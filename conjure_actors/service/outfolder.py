"""The output folder (``--out``) as the job service watches it (QA9 F4).

A job's outputs are saved under the output folder once its prompt ran, on a paid machine. When
the folder's disk refuses the save (full, over quota, read-only: the job fails
``OutputFolderRefused``), every job after it would buy the same GPU run and fail the same way.
So the job service remembers the refusal (:class:`OutputFolder`, memory only) from the first
such failure (or a probe that finds it: at start-up, and every :data:`PROBE_INTERVAL` while
it lasts) until a probe writes, fsyncs and removes a small file there again. Meanwhile new
submissions get 507 (:meth:`OutputFolder.check`), queued jobs wait with no machine given or
launched for them (``Context.hold_jobs``; a job already running goes on) and
``GET /api/v2/health`` is ``degraded`` (:meth:`OutputFolder.problem`); one log line names the
folder as it starts, one as it ends.

The jobs that failed at the save stay failed (``output_folder_refused``): their prompts ran,
but nothing tells when the folder takes writes again, and a retry on its own would buy another
GPU run that may fail the same way; their message says it is the operator's to fix and that the
job can be submitted again (accepted once health is ``ok``).
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Final

import trio

from conjure_actors.service.blobs import RefusalWatch, StoreRefusal
from conjure_actors.service.errors import ApiError

__all__ = ["FOLDER_REFUSALS", "PROBE_INTERVAL", "OutputFolder"]

PROBE_INTERVAL: Final = 10.0
"""Seconds between two probes of an output folder that refuses writes."""

FREE_HEADROOM: Final = 16 * 1024 * 1024
"""Bytes the disk must have free for a probe to end a full disk's refusal (a save found it
full: the probe's own small file may fit where the next job's outputs would not)."""

FOLDER_REFUSALS: Final = frozenset(
    {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EROFS}
)
"""A probe's errors that say the folder's disk refuses writes (the job actors' own set)."""


class OutputFolder:
    """Whether the output folder takes writes, as the last save or probe found it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._refusal = RefusalWatch(
            root,
            "cannot save job outputs in the output folder %s (%s): new jobs get 507 and"
            f" queued jobs wait until it takes writes again (probed every {PROBE_INTERVAL:g}"
            " s); %s",
            "the output folder %s takes writes again: new jobs are accepted",
        )
        self._changed = trio.Event()

    def refusal(self) -> StoreRefusal | None:
        """Why the folder refuses writes (None: the last save or probe wrote there)."""
        return self._refusal.get()

    def refuses(self) -> bool:
        """Whether the folder refuses writes (``Context.hold_jobs``: queued jobs wait)."""
        return self.refusal() is not None

    def refused(self, code: int) -> None:
        """A save (or a probe) found the folder refusing writes with ``code``. Called from
        trio (a job's failure) or a worker thread (a probe)."""
        self._refusal.set(StoreRefusal(code))

    def probe_write(self) -> StoreRefusal | None:
        """Write, fsync and remove a small temporary file in the folder (made if missing):
        whether it takes writes now, remembered (a full disk's refusal ends only with
        :data:`FREE_HEADROOM` free as well). Blocking (a worker thread's). An error
        that is no refusal of the folder's disk leaves what was known as it was."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".probe-")
            try:
                try:
                    os.write(fd, b"\0" * 512)
                    os.fsync(fd)
                finally:
                    os.close(fd)
            finally:
                os.unlink(tmp)
            known = self.refusal()
            if known is not None and known.disk_full:
                # A small file fits on a disk a job's outputs filled up: space is back once
                # some headroom is (else each probe would let one more paid job fail).
                info = os.statvfs(self.root)
                if info.f_bavail * info.f_frsize < FREE_HEADROOM:
                    return known
        except OSError as exc:
            if exc.errno is not None and exc.errno in FOLDER_REFUSALS:
                self.refused(exc.errno)
            return self.refusal()
        self._refusal.set(None)
        return None

    def check(self, retry_after: int) -> None:
        """507 while the folder refuses writes: a job accepted now would run on a paid
        machine and fail at the save. ``insufficient_storage`` for a full disk (as the
        log's), else ``storage_not_writable`` (as the asset store's)."""
        refusal = self.refusal()
        if refusal is None:
            return
        if refusal.disk_full:
            raise ApiError(
                507,
                "insufficient_storage",
                "the server's output folder is full: no job is accepted (its outputs could not"
                " be saved); retry once its operator freed space",
                headers={"Retry-After": str(retry_after)},
            )
        raise ApiError(
            507,
            "storage_not_writable",
            f"the server's output folder refuses writes ({refusal.cause}): no job is accepted"
            " (its outputs could not be saved); retry once its operator fixed it",
            headers={"Retry-After": str(retry_after)},
        )

    def problem(self) -> str | None:
        """Why ``GET /api/v2/health`` is ``degraded`` (None: the folder takes writes)."""
        refusal = self.refusal()
        if refusal is None:
            return None
        what = "its disk is full" if refusal.disk_full else refusal.cause
        return (
            f"the output folder (--out) refuses writes ({what}): new jobs get 507 and queued"
            f" jobs wait (no machine is launched for them) until it takes writes again;"
            f" {refusal.remedy()} (the server's log names the folder)"
        )

    async def watch(self) -> None:
        """Probe every :data:`PROBE_INTERVAL` while the folder refuses writes (a trio task,
        until cancelled; serve's start probes once before, :func:`open_service`)."""
        while True:
            while self.refusal() is None:
                self._changed = trio.Event()
                await self._changed.wait()
            await trio.sleep(PROBE_INTERVAL)
            await trio.to_thread.run_sync(self.probe_write)

    def save_refused(self, code: int) -> None:
        """A job's save found the folder refusing writes (``JobSide.on_output_refused``,
        called in trio): remembered, and the watch starts probing."""
        self.refused(code)
        self._changed.set()
