"""What a harness user asks the runtime to do: a job request (workflow, inputs, priority)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import attrs

__all__ = ["Expectation", "JobRequest"]

Expectation = Literal["valid", "refused", "rejected"]
"""``valid``: should run; ``refused``: ``submit`` must refuse it at once (structurally
broken graph); ``rejected``: accepted, but the server's validation rejects it (the job must
fail without a retry)."""


@attrs.frozen(repr=False)
class JobRequest:
    """One job to submit: an API-format graph and its inputs."""

    workflow: Mapping[str, Any]
    name: str = "workflow"
    image: bytes | None = None
    prompt: str | None = None
    sets: tuple[str, ...] = ()
    priority: int = 0
    seed: int | None = None
    expect: Expectation = "valid"

    @property
    def digest(self) -> str:
        text = json.dumps(self.workflow, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def __repr__(self) -> str:
        # A graph is long: show its name, size and digest (the full graph is in the log).
        parts = [f"workflow=<{self.name}: {len(self.workflow)} nodes, {self.digest}>"]
        if self.image is not None:
            parts.append(f"image=<{len(self.image)} bytes>")
        if self.prompt is not None:
            parts.append(f"prompt={self.prompt!r}")
        if self.sets:
            parts.append(f"sets={self.sets!r}")
        parts.append(f"priority={self.priority}")
        if self.seed is not None:
            parts.append(f"seed={self.seed}")
        parts.append(f"expect={self.expect!r}")
        return f"JobRequest({', '.join(parts)})"
