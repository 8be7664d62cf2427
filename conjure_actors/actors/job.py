"""One job, start to end: what a WorkflowActor does.

An attempt: lease a machine -> ``JobStarted`` -> upload the image (``InputUploaded``) ->
inject the bindings -> ``PromptSubmitting`` (intent, with a locally chosen uuid4 prompt id)
-> ``POST /prompt`` -> ``PromptSubmitted`` -> follow (WebSocket, with polling as the source
of truth) -> download and verify every output into ``OUT/<job_id>/`` (``OutputSaved``) ->
``JobSucceeded`` -> release the machine.

Failures: a prompt rejected by validation is not retried (``JobFailed``); transient errors
are retried with backoff (``JobRetrying``) until ``max_attempts`` have failed; a machine
lost mid-job requeues the job (``JobQueued``) without counting a failure (before a failure
is counted, the pool lists the cloud afresh, so an error that was really the machine
vanishing is a requeue too); each attempt has a deadline and the whole job
``total_timeout`` (35 min by default).

Resume (after a crash, from the log): a job whose current prompt was submitted on a machine
that is still alive is *re-attached*: the prompt is looked up by id (``/queue``,
``/history``): still queued or running -> followed; done -> its outputs downloaded (those
already saved and intact are not downloaded again); unknown to the machine -> the attempt is
abandoned and a new one starts. Nothing the log says was done is done twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import mimetypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from conjure_actors.actors import files
from conjure_actors.actors.context import Context, Leases
from conjure_actors.actors.messages import Lease, LeaseFailedError, Reply
from conjure_actors.actors.policy import Backoff
from conjure_actors.clients import errors as cerr
from conjure_actors.domain import events as ev
from conjure_actors.domain import state as st
from conjure_actors.domain.workflow import conjure_roles

log = logging.getLogger("conjure_actors.actors.job")


class _Requeue(Exception):
    """The machine went away: requeue without counting the attempt."""


class _Retryable(Exception):
    """A failed attempt, retried with backoff. ``machine_suspect``: the failure may be the
    machine's disappearance (a connection error, a forgotten prompt), so the pool is asked
    to look before the failure is counted; a node's own error is not."""

    def __init__(self, reason: str, *, machine_suspect: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.machine_suspect = machine_suspect


# How long a failed attempt waits for the pool's fresh look at the cloud before it counts
# the failure anyway (the listing is rate limited and retried, so it may take a while).
LOST_CHECK_TIMEOUT = 60.0


class _Fatal(Exception):
    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(message)
        self.error_type = error_type
        self.message = message


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


class JobRun:
    """The logic of one job. ``pool`` is the MachinePool-facing API (lease/release)."""

    def __init__(self, ctx: Context, job_id: str, pool: Leases) -> None:
        self.ctx = ctx
        self.job_id = job_id
        self.pool = pool
        cfg = ctx.config.retry
        self.backoff = Backoff(cfg.initial, cfg.factor, cfg.max_delay, cfg.max_attempts)
        self.poll_now = trio.Event()
        self._prompt_client: Any = None
        self._prompt_id: str | None = None
        self._lease: Lease | None = None
        self._started = trio.current_time()

    @property
    def job(self) -> st.Job:
        return self.ctx.state.jobs[self.job_id]

    async def emit(self, *events: Any) -> None:
        await self.ctx.emit(*events)

    # ------------------------------------------------------------------ main loop

    async def run(self) -> None:
        """Run the job to a terminal event (cancellation is handled by :meth:`cancel`)."""
        if self.job.status in st.TERMINAL_STATUSES:
            return
        total = self.ctx.config.retry.total_timeout
        elapsed = max(0.0, self.ctx.now() - self.job.submitted_at)
        with trio.move_on_after(max(0.0, total - elapsed)) as scope:
            await self._loop()
        if scope.cancelled_caught and self.job.status not in st.TERMINAL_STATUSES:
            await self._interrupt_quietly()
            await self.emit(
                ev.JobFailed(
                    job_id=self.job_id,
                    error_type="Timeout",
                    message=f"job did not finish within {total:g} s",
                    retryable=True,
                    at=self.ctx.now(),
                )
            )

    async def _loop(self) -> None:
        reattach = self._reattach_target()
        while self.job.status not in st.TERMINAL_STATUSES:
            job = self.job
            if job.status == st.PENDING:
                await self.emit(ev.JobQueued(job_id=self.job_id, at=self.ctx.now()))
            elif job.status == st.RUNNING and reattach is None:
                await self.emit(
                    ev.JobQueued(job_id=self.job_id, reason="resumed", at=self.ctx.now())
                )
            try:
                lease = await self._lease_machine(reattach)
            except LeaseFailedError as exc:
                if exc.reason == "gone" and reattach is not None:
                    reattach = None
                    continue
                if exc.reason == "cancelled":
                    return
                await self.emit(
                    ev.JobFailed(
                        job_id=self.job_id,
                        error_type="NoMachine",
                        message=_one_line(str(exc)),
                        retryable=exc.retryable,
                        at=self.ctx.now(),
                    )
                )
                return
            attempt_no = self.job.attempt if reattach is not None else self.job.attempt + 1
            try:
                await self._attempt(lease, attempt_no, reattach)
                return
            except _Requeue as exc:
                await self._release(lease)
                if self.job.status == st.RUNNING:
                    await self.emit(
                        ev.JobQueued(job_id=self.job_id, reason=str(exc), at=self.ctx.now())
                    )
            except _Fatal as exc:
                await self._release(lease)
                await self.emit(
                    ev.JobFailed(
                        job_id=self.job_id,
                        error_type=exc.error_type,
                        message=_one_line(exc.message),
                        retryable=False,
                        at=self.ctx.now(),
                    )
                )
                return
            except _Retryable as exc:
                if exc.machine_suspect and await self._machine_gone(lease):
                    # The machine vanished under the attempt: requeue, not a failure.
                    await self._release(lease)
                    if self.job.status == st.RUNNING:
                        await self.emit(
                            ev.JobQueued(
                                job_id=self.job_id,
                                reason=f"machine {lease.server_id} lost",
                                at=self.ctx.now(),
                            )
                        )
                    reattach = None
                    continue
                await self._release(lease)
                failures = self.job.failures + 1
                if self.backoff.exhausted(failures):
                    await self.emit(
                        ev.JobFailed(
                            job_id=self.job_id,
                            error_type="RetriesExhausted",
                            message=_one_line(f"attempt {attempt_no}: {exc.reason}"),
                            retryable=True,
                            at=self.ctx.now(),
                        )
                    )
                    return
                delay = self.backoff.delay(failures)
                await self.emit(
                    ev.JobRetrying(
                        job_id=self.job_id,
                        attempt=attempt_no,
                        delay=delay,
                        reason=_one_line(exc.reason),
                        at=self.ctx.now(),
                    )
                )
                await trio.sleep(delay)
            reattach = None

    async def _machine_gone(self, lease: Lease) -> bool:
        """Is the leased machine lost? Asks the pool for a fresh listing first, so that a
        machine that vanished is known before a failure is counted or it is leased again."""
        if not lease.lost.is_set():
            with trio.move_on_after(LOST_CHECK_TIMEOUT):
                try:
                    await self.pool.polled()
                except Exception as exc:  # a stopping pool: judge by what is known
                    log.debug("job %s: no fresh listing: %s", self.job_id, exc)
        machine = self.ctx.state.machines.get(lease.server_id)
        return lease.lost.is_set() or machine is None or machine.status in st.MACHINE_GONE

    def _reattach_target(self) -> tuple[str, str] | None:
        """``(server_id, prompt_id)`` when the log shows this job's prompt submitted on a
        machine that may still run it (resume)."""
        job = self.job
        if job.status != st.RUNNING or job.server_id is None or job.prompt_id is None:
            return None
        if job.execution in (None, "rejected"):
            return None
        m = self.ctx.state.machines.get(job.server_id)
        if m is None or m.status in st.MACHINE_GONE:
            return None
        return job.server_id, job.prompt_id

    async def _lease_machine(self, reattach: tuple[str, str] | None) -> Lease:
        reply: Reply[Lease] = Reply()
        job = self.job
        await self.pool.lease(
            self.job_id,
            job.workflow_version,
            job.priority,
            reply,
            reattach[0] if reattach else None,
        )
        try:
            lease = await reply.wait()
        except BaseException:
            self.pool.cancel_lease(self.job_id)
            if reply.done and not isinstance(reply, Exception):
                # Granted while we were being cancelled: give it back.
                try:
                    granted = reply._value
                    if granted is not None:
                        with trio.CancelScope(shield=True):
                            await self.pool.release(granted.server_id, self.job_id)
                except cerr.ClientError:
                    pass
            raise
        self._lease = lease
        return lease

    async def _release(self, lease: Lease) -> None:
        self._lease = None
        with trio.CancelScope(shield=True):
            await self.pool.release(lease.server_id, self.job_id)

    # ------------------------------------------------------------------ one attempt

    async def _attempt(
        self, lease: Lease, attempt_no: int, reattach: tuple[str, str] | None
    ) -> None:
        if lease.client is None:
            raise _Requeue("machine has no client")
        gone = lease.lost
        try:
            with single_errors():
                async with trio.open_nursery() as nursery:

                    async def watch_lost() -> None:
                        await gone.wait()
                        nursery.cancel_scope.cancel()

                    nursery.start_soon(watch_lost)
                    with trio.fail_after(self.ctx.config.retry.attempt_timeout):
                        await self._attempt_body(lease, attempt_no, reattach)
                    nursery.cancel_scope.cancel()
        except TooSlowError:
            raise _Retryable(
                f"attempt timed out after {self.ctx.config.retry.attempt_timeout:g} s"
            ) from None
        if gone.is_set() and self.job.status not in st.TERMINAL_STATUSES:
            raise _Requeue(f"machine {lease.server_id} lost")

    async def _attempt_body(
        self, lease: Lease, attempt_no: int, reattach: tuple[str, str] | None
    ) -> None:
        client = lease.client
        sid = lease.server_id
        prompt_id: str | None = None
        if reattach is not None:
            prompt_id = reattach[1]
            where = await self._find(client, prompt_id)
            if where == "unknown":
                # The machine forgot it (restart) or it never arrived: a fresh attempt.
                raise _Retryable(f"server {sid} does not know prompt {prompt_id[:8]}")
        else:
            await self.emit(
                ev.JobStarted(
                    job_id=self.job_id, attempt=attempt_no, server_id=sid, at=self.ctx.now()
                )
            )
            prompt_id = await self._submit(client, sid, attempt_no)
        self._prompt_client, self._prompt_id = client, prompt_id
        outputs = await self._follow(client, prompt_id)
        await self._download(client, outputs)
        await self.emit(ev.JobSucceeded(job_id=self.job_id, at=self.ctx.now()))
        self._prompt_client = self._prompt_id = None
        await self._release(lease)

    async def _find(self, client: Any, prompt_id: str) -> str:
        try:
            return str(await client.find_prompt(prompt_id))
        except cerr.ClientError as exc:
            raise _Retryable(f"looking up prompt: {exc}") from None

    async def _submit(self, client: Any, sid: str, attempt_no: int) -> str:
        job = self.job
        record = self.ctx.state.workflows[job.workflow_sha256]
        graph = json.loads(record.graph_json)
        bindings = dict(job.bindings)
        if job.image_path is not None:
            name = await self._upload(client, graph)
            roles = conjure_roles(graph)
            if roles.input_image is not None:
                bindings[f"{roles.input_image}.image"] = json.dumps(name)
        from conjure_actors.domain.workflow import apply_bindings

        prompt = apply_bindings(graph, bindings)
        prompt_id = str(self.ctx.ids())
        events = self._lease.events if self._lease is not None else None
        client_id = events.client_id if events is not None else self.ctx.ids().hex
        await self.emit(
            ev.PromptSubmitting(
                job_id=self.job_id,
                attempt=attempt_no,
                prompt_id=prompt_id,
                client_id=client_id,
                server_id=sid,
                at=self.ctx.now(),
            )
        )
        try:
            answer = await client.submit(prompt, prompt_id=prompt_id, client_id=client_id)
        except cerr.PromptRejectedError as exc:
            await self.emit(
                ev.PromptRejected(
                    job_id=self.job_id,
                    prompt_id=prompt_id,
                    error_type=exc.error_type,
                    message=_one_line(str(exc)),
                    at=self.ctx.now(),
                )
            )
            raise _Fatal("PromptRejected", str(exc)) from None
        except cerr.OutcomeUnknownError:
            # Never resubmit blindly: look the id up first.
            where = await self._find(client, prompt_id)
            if where == "unknown":
                raise _Retryable("prompt submission outcome unknown and not found") from None
            answer = None
        except cerr.ClientError as exc:
            raise _Retryable(f"submit failed: {exc}") from None
        number = getattr(answer, "number", None)
        await self.emit(
            ev.PromptSubmitted(
                job_id=self.job_id,
                prompt_id=prompt_id,
                number=float(number if number is not None else -1),
                at=self.ctx.now(),
            )
        )
        return prompt_id

    async def _upload(self, client: Any, graph: dict[str, Any]) -> str:
        job = self.job
        assert job.image_path is not None
        path = Path(job.image_path)
        try:
            data = files.read_bytes(path)
        except OSError as exc:
            raise _Fatal(
                "InputMissing", f"cannot read input image {path}: {exc.strerror}"
            ) from None
        digest = hashlib.sha256(data).hexdigest()
        if job.image_sha256 is not None and digest != job.image_sha256:
            raise _Fatal("InputChanged", f"input image {path} changed since the job was submitted")
        filename = f"conjure_{digest[:16]}{path.suffix or '.png'}"
        try:
            uploaded = await client.upload_image(data, filename)
        except cerr.ClientError as exc:
            raise _Retryable(f"upload failed: {exc}") from None
        ref = str(uploaded.reference)
        roles = conjure_roles(graph)
        await self.emit(
            ev.InputUploaded(
                job_id=self.job_id,
                node_id=roles.input_image or "",
                name=ref,
                sha256=digest,
                size=len(data),
                at=self.ctx.now(),
            )
        )
        return ref

    # ------------------------------------------------------------------ following

    async def _follow(self, client: Any, prompt_id: str) -> list[Any]:
        """Map the client's progress updates onto events until the prompt ends; returns the
        outputs to download. A stall notice (MonitorActor) restarts following by polling."""
        use_ws = True
        while True:
            stalled = self.poll_now
            with trio.CancelScope() as scope, single_errors():
                async with trio.open_nursery() as nursery:

                    async def on_stall(
                        scope: trio.CancelScope = scope, stalled: trio.Event = stalled
                    ) -> None:
                        await stalled.wait()
                        scope.cancel()

                    nursery.start_soon(on_stall)
                    outputs = await self._follow_once(client, prompt_id, use_ws)
                    nursery.cancel_scope.cancel()
                    return outputs
            if scope.cancelled_caught:
                log.info("job %s stalled: following prompt by polling", self.job_id)
                use_ws = False

    async def _follow_once(self, client: Any, prompt_id: str, use_ws: bool) -> list[Any]:
        from conjure_actors.clients import comfyui as cu

        jid = self.job_id
        events = self._lease.events if (use_ws and self._lease is not None) else None
        poll = self.ctx.config.pool.poll_interval
        try:
            async with contextlib.aclosing(
                client.follow(prompt_id, events=events, poll_interval=min(1.0, poll))
            ) as updates:
                async for u in updates:
                    now = self.ctx.now()
                    match u:
                        case cu.PromptStarted():
                            await self.emit(
                                ev.ExecutionStarted(job_id=jid, prompt_id=prompt_id, at=now)
                            )
                        case cu.NodesCached(nodes=nodes):
                            await self.emit(
                                ev.NodeCached(
                                    job_id=jid, prompt_id=prompt_id, nodes=tuple(nodes), at=now
                                )
                            )
                        case cu.NodeStarted(node=node):
                            await self.emit(
                                ev.NodeStarted(
                                    job_id=jid, prompt_id=prompt_id, node_id=node, at=now
                                )
                            )
                        case cu.NodeProgress(node=node, value=value, max=mx):
                            await self.emit(
                                ev.NodeProgress(
                                    job_id=jid,
                                    prompt_id=prompt_id,
                                    node_id=node,
                                    value=value,
                                    max=mx,
                                    at=now,
                                )
                            )
                        case cu.NodeExecuted(node=node):
                            await self.emit(
                                ev.NodeExecuted(
                                    job_id=jid, prompt_id=prompt_id, node_id=node, at=now
                                )
                            )
                        case cu.PromptSucceeded(outputs=outs):
                            if self.job.execution != "succeeded":
                                await self.emit(
                                    ev.ExecutionSucceeded(job_id=jid, prompt_id=prompt_id, at=now)
                                )
                            return list(outs)
                        case cu.PromptFailed():
                            await self.emit(
                                ev.ExecutionFailed(
                                    job_id=jid,
                                    prompt_id=prompt_id,
                                    node_id=u.node_id,
                                    node_type=u.node_type,
                                    exception_type=u.exception_type,
                                    message=_one_line(u.exception_message),
                                    at=now,
                                )
                            )
                            raise _Retryable(
                                f"node {u.node_id} ({u.node_type}) failed: "
                                f"{u.exception_type}: {u.exception_message}",
                                machine_suspect=False,
                            )
                        case cu.PromptInterrupted():
                            await self.emit(
                                ev.ExecutionInterrupted(
                                    job_id=jid, prompt_id=prompt_id, node_id=u.node_id, at=now
                                )
                            )
                            raise _Retryable("prompt interrupted")
                        case _:
                            pass
        except cerr.PromptLostError as exc:
            raise _Retryable(f"prompt lost: {exc}") from None
        except cerr.ClientError as exc:
            raise _Retryable(f"following failed: {exc}") from None
        raise _Retryable("progress ended without an outcome")

    async def _download(self, client: Any, outputs: list[Any]) -> None:
        """Download every output not already saved intact; verify and write atomically."""
        out = self.ctx.out_dir / self.job_id
        saved = {(o.node_id, o.filename): o for o in self.job.outputs}
        for output in outputs:
            node_id = str(output.node_id)
            filename = str(output.filename)
            path = out / Path(filename).name
            prior = saved.get((node_id, filename))
            if prior is not None and files.intact(Path(prior.path), prior.sha256):
                continue
            try:
                data, digest = await _download_one(client, output)
            except cerr.DownloadError as exc:
                raise _Retryable(f"download of {filename} failed: {exc}") from None
            except cerr.ClientError as exc:
                raise _Retryable(f"download of {filename} failed: {exc}") from None
            files.write_atomic(path, data)
            kind = _kind_of(filename)
            await self.emit(
                ev.OutputSaved(
                    job_id=self.job_id,
                    node_id=node_id,
                    filename=filename,
                    path=str(path),
                    size=len(data),
                    sha256=digest,
                    kind=kind,
                    at=self.ctx.now(),
                )
            )

    # ------------------------------------------------------------------ cancel

    async def cancel(self, reason: str) -> None:
        """Interrupt the running prompt or dequeue it, release, ``JobCancelled`` (shielded)."""
        with trio.CancelScope(shield=True), trio.move_on_after(15):
            self.pool.cancel_lease(self.job_id)
            await self._interrupt_quietly()
            if self._lease is not None:
                lease, self._lease = self._lease, None
                await self.pool.release(lease.server_id, self.job_id)
            if self.job.status not in st.TERMINAL_STATUSES:
                await self.emit(
                    ev.JobCancelled(job_id=self.job_id, reason=reason, at=self.ctx.now())
                )

    async def _interrupt_quietly(self) -> None:
        client, prompt_id = self._prompt_client, self._prompt_id
        if client is None or prompt_id is None:
            return
        with trio.CancelScope(shield=True), trio.move_on_after(10):
            try:
                await client.delete_from_queue(prompt_id)
                await client.interrupt(prompt_id)
            except cerr.ClientError as exc:
                log.info("interrupting job %s: %s", self.job_id, exc)


TooSlowError = trio.TooSlowError


@contextlib.contextmanager
def single_errors() -> Iterator[None]:
    """Let one error escape a nursery as itself, not wrapped in an exception group, so the
    attempt's ``except`` clauses (fatal, retryable, requeue) see it."""
    try:
        yield
    except BaseExceptionGroup as group:
        errors = [e for e in _leaves(group) if not isinstance(e, trio.Cancelled)]
        if len(errors) == 1:
            raise errors[0] from None
        raise


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc]


async def _download_one(client: Any, output: Any) -> tuple[bytes, str]:
    result = await client.download(output)
    return bytes(result.data), str(result.sha256)


def _kind_of(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith((".glb", ".gltf", ".obj", ".ply")):
        return "mesh"
    mime, _ = mimetypes.guess_type(lower)
    if mime and mime.startswith("image/"):
        return "image"
    if mime and mime.startswith("video/"):
        return "video"
    return "file"
