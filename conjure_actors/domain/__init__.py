"""The pure heart of conjure_actors: events, state + apply, decisions, workflow graphs, prices.

Nothing in this package does I/O (except :func:`~conjure_actors.domain.workflow.load_workflow`,
which reads the file it is given), reads a clock or draws a random number. Modules:

- :mod:`~conjure_actors.domain.events`: the event vocabulary (the ``Event`` union);
- :mod:`~conjure_actors.domain.state`: ``State`` and ``apply``, the fold step;
- :mod:`~conjure_actors.domain.decide`: commands validated against the state, events out;
- :mod:`~conjure_actors.domain.machines_policy`: the machine pool's decisions (reuse,
  launch, renew, idle stop, the final bill);
- :mod:`~conjure_actors.domain.cost_policy`: the ledger's decisions (accruals, budget,
  launch and renewal approval);
- :mod:`~conjure_actors.domain.workflow`: ComfyUI API-format graphs;
- :mod:`~conjure_actors.domain.prices`: RunComfy prices and the billing rule;
- :mod:`~conjure_actors.domain.describe`: one-line descriptions of events;
- :mod:`~conjure_actors.domain.errors`: the domain's error tree.
"""

from conjure_actors.domain.describe import describe
from conjure_actors.domain.errors import (
    CommandRejectedError,
    DomainError,
    IllegalTransitionError,
    PriceTableError,
    WorkflowError,
)
from conjure_actors.domain.events import EVENT_TYPES, TAGS, Event
from conjure_actors.domain.prices import (
    PriceTable,
    billed_seconds,
    cost_micros,
    default_price_table,
    estimate_job_cost,
    format_usd,
)
from conjure_actors.domain.state import (
    SCHEMA_VERSION,
    State,
    apply,
    apply_all,
    copy_state,
    initial_state,
    state_from_builtins,
    state_to_builtins,
)
from conjure_actors.domain.workflow import (
    NodeSpec,
    Roles,
    Workflow,
    bindings_for,
    catalog_from_object_info,
    load_workflow,
    validate_graph,
)

__all__ = [
    "EVENT_TYPES",
    "SCHEMA_VERSION",
    "TAGS",
    "CommandRejectedError",
    "DomainError",
    "Event",
    "IllegalTransitionError",
    "NodeSpec",
    "PriceTable",
    "PriceTableError",
    "Roles",
    "State",
    "Workflow",
    "WorkflowError",
    "apply",
    "apply_all",
    "billed_seconds",
    "bindings_for",
    "catalog_from_object_info",
    "copy_state",
    "cost_micros",
    "default_price_table",
    "describe",
    "estimate_job_cost",
    "format_usd",
    "initial_state",
    "load_workflow",
    "state_from_builtins",
    "state_to_builtins",
    "validate_graph",
]
