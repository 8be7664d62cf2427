"""Worker threads beside the event loop: the GIL handed to them promptly.

The runtime's worker threads (the disk committer's, trio's for ``to_thread.run_sync``, the
journal's commit thread) release the GIL for their system calls and need it back to go on.
A thread waiting for the GIL asks its holder to drop it only after waiting a whole switch
interval (``sys.getswitchinterval()``, default 5 ms) *without a wake-up*; but the trio
thread releases the GIL at every scheduler pass (its ``epoll`` call), which wakes the
waiter and restarts its wait, and takes it back before the waiter runs. So while the loop
has work and passes more often than once per interval, the thread waits until the loop
falls idle: the "convoy effect" (bpo-7946). :func:`prompt_gil_handoff` shortens the
interval so that the waiter times out between two passes and the loop hands the GIL over
at its next bytecode boundary.

Measured (``bench/busy_loop.py``, 2 cores, a loop kept busy by four tasks computing about a
millisecond between checkpoints): at 5 ms a batch of nine output files took a median of
59-199 ms and a p90 of 0.7-40 s, one took 19 s; at 0.2 ms, 39-49 ms and 47-70 ms (3-4 ms on
an idle loop at either). A shorter interval costs nothing while no thread waits for the
GIL; when one does, the loop gives it up for the few microseconds the thread runs Python
between two system calls.
"""

from __future__ import annotations

import sys
from typing import Final

__all__ = ["GIL_SWITCH_SECONDS", "prompt_gil_handoff"]

GIL_SWITCH_SECONDS: Final = 0.0002
"""The interpreter's switch interval once the runtime runs worker threads."""


def prompt_gil_handoff() -> None:
    """Shorten the interpreter's switch interval to :data:`GIL_SWITCH_SECONDS` (never
    lengthen it): process-wide, once, by whatever starts worker threads that must not wait
    for the loop to fall idle (the actor system, the disk committer)."""
    if sys.getswitchinterval() > GIL_SWITCH_SECONDS:
        sys.setswitchinterval(GIL_SWITCH_SECONDS)
