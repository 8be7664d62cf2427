"""Snapshots (state tagged with the seq it covers) and ``replay`` = snapshot + the tail.

Snapshot file layout (little-endian)::

    magic b"\\x89EVS\\r\\n\\x1a\\n" | u32 version | u64 seq | f64 last_ts (NaN: unknown)
    | u32 crc32c(payload) | u32 length | payload (msgpack of the state)

A snapshot is written to a temporary file, fsynced, then renamed over the old one (and the
directory fsynced), so a crash leaves either the old snapshot or the new one, never half of
one. The state type may be anything msgspec encodes (Structs, attrs classes, dataclasses...).

``replay`` trusts a snapshot only if it decodes as ``state_type``, its CRC holds, the log
really has a record at the snapshot's seq, and (when the snapshot recorded it) that record's
``ts`` matches: a snapshot of another log, or of a log that was since truncated, is
"mismatched". Any doubt means a full replay from seq 1, with the reason in
``ReplayResult.snapshot_error``: a snapshot is an optimisation, never a source of truth.

A snapshot directory (``LOG.snapshots/``, written by ``open_journal(snapshot_every=N)``)
holds one snapshot per N events, each named for its seq and for the state type's schema
(``000000100000.<fingerprint>.snapshot``): once the state type changes (a field added...),
the old snapshots are simply not seen, and the new code folds from the log.
``open_journal(keep_snapshots=K)`` deletes all but the newest K after each one it writes
(:func:`prune_snapshots`). ``replay(..., snapshot_dir=...)`` starts from the newest one at
or before ``stop_seq`` that checks out (older ones are tried if it does not), and reads the
log from there through the seq -> offset index, so its time is that of the records after
the snapshot.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import hashlib
import math
import os
import re
import struct
from collections.abc import Callable, Iterator
from typing import Any, Final, TypeVar

import msgspec

from ._format import crc32c_fn
from .codec import Upcasters
from .errors import SnapshotError
from .memory import MemoryLog
from .reader import read
from .record import Record
from .writer import fsync_dir

S = TypeVar("S")

SNAPSHOT_MAGIC: Final = b"\x89EVS\r\n\x1a\n"
SNAPSHOT_VERSION: Final = 1
_HEAD: Final = struct.Struct("<8sIQdII")
_SNAPSHOT_NAME: Final = re.compile(r"^(\d{12})\.([0-9a-f]{16})\.snapshot$")


@functools.cache
def state_fingerprint(state_type: Any) -> str:
    """16 hex digits naming the shape of ``state_type`` (its JSON schema, docstrings too).

    A snapshot is only read back as the state type it was written from: a changed type
    (a new field, a renamed class...) gets another fingerprint, so its old snapshots are
    ignored rather than decoded into a state the fold would not have built. (A change to
    the fold's logic alone does not show here: delete the snapshot directory then.)
    """
    try:
        shape = msgspec.json.encode(msgspec.json.schema(state_type))
    except (TypeError, ValueError):
        # A type msgspec cannot describe (it will fail to encode too): name it at least.
        shape = repr(state_type).encode()
    return hashlib.sha256(shape).hexdigest()[:16]


def snapshots_dir(log_path: str | os.PathLike[str]) -> str:
    """The snapshot directory of the log at ``log_path``: ``LOG.snapshots`` beside it."""
    return os.fspath(log_path) + ".snapshots"


def snapshot_file(directory: str | os.PathLike[str], seq: int, state_type: Any) -> str:
    """The file of the snapshot of a ``state_type`` state at ``seq`` in a snapshot directory."""
    name = f"{seq:012d}.{state_fingerprint(state_type)}.snapshot"
    return os.path.join(os.fspath(directory), name)


def list_snapshots(directory: str | os.PathLike[str], state_type: Any) -> list[int]:
    """The seqs of the ``state_type`` snapshots in ``directory``, ascending (maybe ``[]``)."""
    try:
        names = os.listdir(directory)
    except (FileNotFoundError, NotADirectoryError):
        return []
    mine = state_fingerprint(state_type)
    return sorted(
        int(m.group(1))
        for name in names
        if (m := _SNAPSHOT_NAME.match(name)) and m.group(2) == mine
    )


def prune_snapshots(directory: str | os.PathLike[str], state_type: Any, keep: int) -> list[int]:
    """Delete all but the newest ``keep`` (at least 1) ``state_type`` snapshots in
    ``directory``; returns the seqs deleted. Snapshots of other state types are left alone
    (an older version of the program may still want them). A file already gone is fine."""
    if keep < 1:
        raise ValueError(f"keep must be at least 1, not {keep}")
    old = list_snapshots(directory, state_type)[:-keep]
    for seq in old:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(snapshot_file(directory, seq, state_type))
    return old


class ReplayResult(msgspec.Struct, frozen=True):
    """What :func:`replay` rebuilt: ``state`` after ``last_seq``, and whether a snapshot helped.

    ``used_snapshot_seq`` is the seq of the snapshot that was used (None: full replay);
    ``snapshot_error`` says why a given snapshot was not used (None if it was, or if absent).
    """

    state: Any
    last_seq: int
    used_snapshot_seq: int | None
    snapshot_error: str | None = None


def write_snapshot(
    path: str | os.PathLike[str],
    state: Any,
    seq: int,
    state_type: Any,
    *,
    last_ts: float | None = None,
) -> None:
    """Atomically write ``state`` (a value of ``state_type``) as covering records up to ``seq``.

    ``last_ts``, the ``ts`` of record ``seq``, lets :func:`replay` check that the snapshot
    belongs to the log it is replaying (recommended).
    """
    if seq < 0:
        raise ValueError(f"seq must be >= 0, not {seq}")
    write_snapshot_payload(path, encode_state(path, state), seq, state_type, last_ts=last_ts)


def encode_state(path: str | os.PathLike[str], state: Any) -> bytes:
    """``state`` as a snapshot payload; ``SnapshotError`` (naming ``path``) if it cannot be."""
    try:
        return msgspec.msgpack.encode(state)
    except (msgspec.EncodeError, TypeError, OverflowError) as exc:
        raise SnapshotError(path, f"the state cannot be encoded: {exc}") from exc


def write_snapshot_payload(
    path: str | os.PathLike[str],
    payload: bytes,
    seq: int,
    state_type: Any,
    *,
    last_ts: float | None = None,
    validate: bool = True,
) -> None:
    """:func:`write_snapshot` of a state already encoded (the journal encodes in the trio
    thread, where the state cannot change under it, and writes in a worker thread).

    ``validate=False`` skips decoding the payload back as ``state_type`` (the journal checks
    its first snapshot only: decoding costs as much as reading the snapshot back).
    """
    # Validate against state_type now: a snapshot that cannot be read back is worse than none.
    if validate:
        try:
            msgspec.msgpack.decode(payload, type=state_type)
        except msgspec.ValidationError as exc:
            raise SnapshotError(
                path, f"the state does not round-trip as {state_type!r}: {exc}"
            ) from exc
    ts = math.nan if last_ts is None else last_ts
    head = _HEAD.pack(SNAPSHOT_MAGIC, SNAPSHOT_VERSION, seq, ts, crc32c_fn(payload), len(payload))
    path = os.fspath(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0), 0o600)
    try:
        os.write(fd, head + payload)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        os.unlink(tmp)
        raise
    os.close(fd)
    os.replace(tmp, path)
    fsync_dir(path)


def read_snapshot_full(
    path: str | os.PathLike[str], state_type: Any
) -> tuple[int, float | None, Any] | None:
    """``(seq, last_ts, state)`` from a snapshot file; None if there is no file.

    Raises :class:`SnapshotError` if the file is damaged or does not decode as ``state_type``.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise SnapshotError(path, "it is a directory") from None
    if len(data) < _HEAD.size:
        raise SnapshotError(path, "the file is truncated")
    magic, version, seq, ts, crc, length = _HEAD.unpack_from(data)
    if magic != SNAPSHOT_MAGIC:
        raise SnapshotError(path, "wrong magic bytes; not an eventlog snapshot")
    if version != SNAPSHOT_VERSION:
        raise SnapshotError(path, f"unsupported snapshot version {version}")
    payload = memoryview(data)[_HEAD.size :]
    if len(payload) != length or crc32c_fn(payload) != crc:
        raise SnapshotError(path, "checksum mismatch or wrong length: the file is damaged")
    try:
        state = _decode_state(payload, state_type)
    except msgspec.DecodeError as exc:
        raise SnapshotError(path, f"the state does not decode as {state_type!r}: {exc}") from exc
    return seq, (None if math.isnan(ts) else ts), state


@functools.cache
def _state_decoder(state_type: Any) -> msgspec.msgpack.Decoder[Any]:
    """One typed decoder per state type (``decode(type=...)`` rebuilds its plan each call)."""
    return msgspec.msgpack.Decoder(state_type)


def _decode_state(payload: memoryview, state_type: Any) -> Any:
    # A large state is hundreds of thousands of new objects: the cyclic GC would walk the
    # growing heap again and again while they are made (a third of the decode time). They
    # hold no cycles the GC must break before the decode returns, so it waits until then.
    try:
        decoder = _state_decoder(state_type)
    except TypeError:  # an unhashable type (an Annotated with a dict...): no cache
        decoder = msgspec.msgpack.Decoder(state_type)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return decoder.decode(payload)
    finally:
        if enabled:
            gc.enable()


def read_snapshot(path: str | os.PathLike[str], state_type: Any) -> tuple[int, Any] | None:
    """``(seq, state)`` from a snapshot file; None if there is none.

    Raises :class:`SnapshotError` if it is damaged or does not decode as ``state_type``.
    """
    got = read_snapshot_full(path, state_type)
    return None if got is None else (got[0], got[2])


def _records(
    log: str | os.PathLike[str] | MemoryLog[Any],
    event_type: Any,
    start_seq: int,
    stop_seq: int | None,
    upcasters: Upcasters | None,
) -> Iterator[Record[Any]]:
    if isinstance(log, MemoryLog):
        return log.records(start_seq=start_seq, stop_seq=stop_seq, upcasters=upcasters)
    return read(log, event_type, start_seq=start_seq, stop_seq=stop_seq, upcasters=upcasters)


def replay(
    log_path: str | os.PathLike[str] | MemoryLog[Any],
    event_type: Any,
    apply: Callable[[S, Any], S],
    initial: S,
    *,
    snapshot_path: str | os.PathLike[str] | None = None,
    snapshot_dir: str | os.PathLike[str] | None = None,
    state_type: Any = None,
    stop_seq: int | None = None,
    upcasters: Upcasters | None = None,
) -> ReplayResult:
    """Rebuild state: the newest valid snapshot plus the records after it, else a full fold.

    ``log_path`` may also be a :class:`MemoryLog`. ``state_type`` is required with
    ``snapshot_path`` or ``snapshot_dir``. ``stop_seq`` replays up to that seq (a snapshot
    past it is not used). With ``snapshot_dir``, the newest snapshot in it at or before
    ``stop_seq`` that checks out is used (then ``snapshot_path``, then none).
    """
    snapshot_error: str | None = None
    if snapshot_dir is not None:
        if state_type is None:
            raise ValueError("replay() needs state_type to read a snapshot")
        for seq in reversed(list_snapshots(snapshot_dir, state_type)):
            if stop_seq is not None and seq > stop_seq:
                continue
            result_or_error = _replay_from_file(
                snapshot_file(snapshot_dir, seq, state_type),
                log_path,
                event_type,
                apply,
                state_type,
                stop_seq,
                upcasters,
            )
            if isinstance(result_or_error, ReplayResult):
                if snapshot_error is None:
                    return result_or_error
                return msgspec.structs.replace(result_or_error, snapshot_error=snapshot_error)
            snapshot_error = snapshot_error or result_or_error
    if snapshot_path is not None:
        if state_type is None:
            raise ValueError("replay() needs state_type to read a snapshot")
        try:
            got = read_snapshot_full(snapshot_path, state_type)
        except SnapshotError as exc:
            got, snapshot_error = None, str(exc)
        if got is not None:
            snap_seq, snap_ts, snap_state = got
            if stop_seq is not None and snap_seq > stop_seq:
                snapshot_error = f"snapshot covers seq {snap_seq}, past stop_seq {stop_seq}"
            else:
                result = _replay_from(
                    log_path, event_type, apply, snap_state, snap_seq, snap_ts, stop_seq, upcasters
                )
                if isinstance(result, ReplayResult):
                    return result
                snapshot_error = result
    state = initial
    last = 0
    for record in _records(log_path, event_type, 1, stop_seq, upcasters):
        state = apply(state, record.event)
        last = record.seq
    return ReplayResult(state, last, None, snapshot_error)


def _replay_from_file(
    path: str,
    log: str | os.PathLike[str] | MemoryLog[Any],
    event_type: Any,
    apply: Callable[[S, Any], S],
    state_type: Any,
    stop_seq: int | None,
    upcasters: Upcasters | None,
) -> ReplayResult | str:
    """Replay from the snapshot file at ``path``, or say why it cannot be used."""
    try:
        got = read_snapshot_full(path, state_type)
    except SnapshotError as exc:
        return str(exc)
    if got is None:
        return f"snapshot {path!r} disappeared"
    snap_seq, snap_ts, snap_state = got
    return _replay_from(log, event_type, apply, snap_state, snap_seq, snap_ts, stop_seq, upcasters)


def _replay_from(
    log: str | os.PathLike[str] | MemoryLog[Any],
    event_type: Any,
    apply: Callable[[S, Any], S],
    state: S,
    snap_seq: int,
    snap_ts: float | None,
    stop_seq: int | None,
    upcasters: Upcasters | None,
) -> ReplayResult | str:
    """Fold the records after ``snap_seq`` onto the snapshot state, or say why it mismatches."""
    if snap_seq == 0:
        records = _records(log, event_type, 1, stop_seq, upcasters)
    else:
        # Start AT the snapshot's seq: that record must exist (and match ts) in this log.
        records = _records(log, event_type, snap_seq, stop_seq, upcasters)
        first = next(records, None)
        if first is None or first.seq != snap_seq:
            return f"snapshot covers seq {snap_seq} but the log has no record {snap_seq}"
        if snap_ts is not None and first.ts != snap_ts:
            return f"snapshot does not belong to this log (record {snap_seq} has another ts)"
    last = snap_seq
    for record in records:
        state = apply(state, record.event)
        last = record.seq
    return ReplayResult(state, last, snap_seq)
