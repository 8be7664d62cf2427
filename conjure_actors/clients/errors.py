"""Errors raised by the ComfyUI and RunComfy clients.

::

    ClientError                       talking to a service failed (base; .status if HTTP)
    ├── TransportError                connect/read failed after retries
    ├── OutcomeUnknownError           it may or may not have happened (timeout, lost answer)
    ├── ComfyUIError
    │   ├── PromptRejectedError       400 from /prompt; .node_errors lists every problem
    │   ├── PromptLostError           the server forgot the prompt (restart, deleted, evicted)
    │   ├── ExecutionError            the prompt ran and failed (node id, type, message)
    │   ├── PromptInterruptedError    the prompt was interrupted
    │   ├── ComfyUIResponseError      an answer or frame of the wrong shape (short excerpt)
    │   └── DownloadError             an output is missing, truncated or not what it claims
    │       ├── LocalSaveError            it arrived, but this machine could not save it
    │       ├── DownloadTooLargeError     the body went over the size cap
    │       ├── DownloadStalledError      no byte arrived for the stall timeout
    │       └── UnsafeOutputNameError     the output's subfolder/filename cannot be saved safely
    └── RunComfyError
        ├── AuthError                 401/403: the token is wrong
        ├── RateLimitedError          429 after retries
        ├── ServerNotFoundError       404 for a server id (gone, or not yet visible)
        ├── RunComfyResponseError     an answer of the wrong shape (short excerpt)
        └── LaunchError               the launch call failed or the machine never got Ready
            └── UnknownWorkflowVersionError  refused: the account has no such workflow version

Messages never carry the API token or a machine's URL: say ``server <id>`` instead.
"""

from __future__ import annotations

import attrs

from conjure_actors.errors import ConjureError


class ClientError(ConjureError):
    """Talking to a service failed."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class TransportError(ClientError):
    """The connection failed (after retries): nothing was answered."""


class OutcomeUnknownError(ClientError):
    """A request that may have been acted on, with no answer saying so: a timeout or a
    connection lost after it was sent, or an answer that does not prove a refusal (a
    gateway's 502/504 to ``POST /prompt``). Reconcile (look it up) before sending it again."""


class ComfyUIError(ClientError):
    """A ComfyUI server answered with an error."""


@attrs.frozen
class NodeError:
    """One problem ComfyUI found with one input of one node (from ``node_errors``)."""

    node_id: str
    class_type: str
    type: str
    message: str
    details: str = ""
    input_name: str | None = None


class PromptRejectedError(ComfyUIError):
    """``/prompt`` answered 400: ``error_type`` and every ``node_errors`` entry."""

    def __init__(self, message: str, *, error_type: str, node_errors: list[NodeError]) -> None:
        super().__init__(message, status=400)
        self.error_type = error_type
        self.node_errors = node_errors


class PromptLostError(ComfyUIError):
    """The prompt is in neither the queue nor the history: deleted, evicted or forgotten."""


class ExecutionError(ComfyUIError):
    """The prompt ran and a node failed."""

    def __init__(
        self, message: str, *, node_id: str | None, node_type: str | None, exception_type: str
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.node_type = node_type
        self.exception_type = exception_type


class PromptInterruptedError(ComfyUIError):
    """The prompt was interrupted (``execution_interrupted``)."""


class ComfyUIResponseError(ComfyUIError):
    """A ComfyUI answer that is not what the protocol says (wrong types, missing fields, not
    JSON): the message carries a short, scrubbed excerpt of it."""


class DownloadError(ComfyUIError):
    """An output could not be downloaded intact (missing, truncated, wrong signature)."""


class LocalSaveError(DownloadError):
    """The output arrived, but this machine could not save it (its disk full, the output
    folder refused, read-only): the output is fine, so running the prompt again cannot help."""


class DownloadTooLargeError(DownloadError):
    """The output is larger than the download size cap (declared or while streaming)."""


class DownloadStalledError(DownloadError):
    """No byte of the output arrived for the stall timeout (after retries)."""


class UnsafeOutputNameError(DownloadError):
    """An output's subfolder or filename could land outside its job's folder, or holds
    characters no file name should (NUL, control characters): it is refused, not retried."""


class RunComfyError(ClientError):
    """The RunComfy API answered with an error."""


class AuthError(RunComfyError):
    """401/403: the user id or API token is wrong."""


class RateLimitedError(RunComfyError):
    """429 ``rate_limited`` persisted after backing off."""


class ServerNotFoundError(RunComfyError):
    """404 for a server id: it is gone (or, right after a launch, not visible yet)."""


class RunComfyResponseError(RunComfyError):
    """A RunComfy answer that is not what the API says (wrong types, missing fields, not
    JSON): the message carries a short, scrubbed excerpt of it."""


class LaunchError(RunComfyError):
    """A machine could not be launched or never became Ready."""


class UnknownWorkflowVersionError(LaunchError):
    """A launch refused because the account has no such workflow version (its listing of
    workflows does not name it): bad input, not a failure of RunComfy; nothing launched.
    The message names the account's versions."""
