"""The job's retry schedule: a pure rule the WorkflowActor calls in its decide step.

The machine pool's and the ledger's policies live in the domain
(:mod:`conjure_actors.domain.machines_policy`, :mod:`conjure_actors.domain.cost_policy`).
"""

from __future__ import annotations

import attrs


@attrs.frozen
class Backoff:
    """A job's retry schedule: ``initial * factor ** (attempt - 1)``, capped at ``max_delay``.

    ``max_attempts`` is handed to :func:`conjure_actors.domain.decide.judge_failure`, the one
    place that decides when the retries are exhausted.
    """

    initial: float
    factor: float
    max_delay: float
    max_attempts: int

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based)."""
        return float(min(self.max_delay, self.initial * self.factor ** max(0, attempt - 1)))
