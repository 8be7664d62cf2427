"""The actor runtime: supervised actors on trio, generic (it knows nothing of ComfyUI).

- :class:`Actor` (subclass it), :class:`ActorRef` (``tell``, ``tell_nowait``, ``ask``,
  ``statistics``), :class:`Reply` (a deferred answer), :func:`shielded` (cleanup that must run).
- Supervisors: :class:`ActorSpec`, :class:`SupervisorSpec`, :class:`SupervisorRef`,
  :class:`Strategy`, :class:`Restart`, :class:`Intensity`, :class:`Backoff`.
- :func:`open_actor_system` / :class:`ActorSystem`: the root supervisor, journal and clocks.
- :class:`PriorityGate`: foreground work first; a background supervisor's actors wait for
  their turn (bounded) before each message, their tasks at :func:`background_checkpoint`.
- Lifecycle events (:mod:`~conjure_actors.runtime.events`) go to an :class:`EventSink`.
- :class:`DiskCommitter` (:func:`disk_committer`: the run's): group commit of durable file
  writes (:class:`FileCommit`), one worker thread, one wake-up per batch.
- :func:`this_process`, :func:`process_id` / :class:`ProcessId`: who writes a log, and
  :func:`process_running` whether that process still runs (a copy of a live log is refused).
- Errors: :class:`ActorError` and its subclasses (:mod:`~conjure_actors.runtime.errors`).
"""

from conjure_actors.runtime.actor import (
    BATCH,
    DEFAULT_MAILBOX,
    Actor,
    ActorRef,
    ActorStatistics,
    Reply,
    Status,
    shielded,
)
from conjure_actors.runtime.disk import (
    DiskCommitter,
    DiskStatistics,
    FileCommit,
    disk_committer,
    fsync_dir,
)
from conjure_actors.runtime.errors import (
    ActorError,
    ActorStoppedError,
    AskTimeoutError,
    EscalationError,
    MailboxFullError,
    NameTakenError,
)
from conjure_actors.runtime.events import (
    LIFECYCLE_EVENTS,
    ActorCrashed,
    ActorRestarted,
    ActorStarted,
    ActorStopped,
    LifecycleEvent,
    SupervisorEscalated,
)
from conjure_actors.runtime.gate import (
    DEFAULT_MAX_WAIT,
    DEFAULT_TURN,
    GateStatistics,
    PriorityGate,
    background_checkpoint,
)
from conjure_actors.runtime.policy import (
    DEFAULT_BACKOFF,
    DEFAULT_INTENSITY,
    NO_BACKOFF,
    Backoff,
    Intensity,
    Restart,
    Strategy,
)
from conjure_actors.runtime.process import (
    ProcessId,
    process_id,
    process_running,
    this_process,
)
from conjure_actors.runtime.sink import MAX_MESSAGE, EventSink, ListSink, default_scrub
from conjure_actors.runtime.supervisor import (
    DEFAULT_SHUTDOWN_TIMEOUT,
    ActorSpec,
    ChildSpec,
    SupervisorRef,
    SupervisorSpec,
    SupervisorStatistics,
)
from conjure_actors.runtime.system import ActorSystem, open_actor_system

__all__ = [
    "BATCH",
    "DEFAULT_BACKOFF",
    "DEFAULT_INTENSITY",
    "DEFAULT_MAILBOX",
    "DEFAULT_MAX_WAIT",
    "DEFAULT_SHUTDOWN_TIMEOUT",
    "DEFAULT_TURN",
    "LIFECYCLE_EVENTS",
    "MAX_MESSAGE",
    "NO_BACKOFF",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorRestarted",
    "ActorSpec",
    "ActorStarted",
    "ActorStatistics",
    "ActorStopped",
    "ActorStoppedError",
    "ActorSystem",
    "AskTimeoutError",
    "Backoff",
    "ChildSpec",
    "DiskCommitter",
    "DiskStatistics",
    "EscalationError",
    "EventSink",
    "FileCommit",
    "GateStatistics",
    "Intensity",
    "LifecycleEvent",
    "ListSink",
    "MailboxFullError",
    "NameTakenError",
    "PriorityGate",
    "ProcessId",
    "Reply",
    "Restart",
    "Status",
    "Strategy",
    "SupervisorEscalated",
    "SupervisorRef",
    "SupervisorSpec",
    "SupervisorStatistics",
    "background_checkpoint",
    "default_scrub",
    "disk_committer",
    "fsync_dir",
    "open_actor_system",
    "process_id",
    "process_running",
    "shielded",
    "this_process",
]
