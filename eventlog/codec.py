"""Encoding and decoding events, with upcasters for schema evolution.

Events are msgspec Structs (or a tagged Union of them). Writing uses ONE
``msgspec.msgpack.Encoder``; reading uses ONE typed ``Decoder(event_type)``, which is the
fast path for every record written by the current code.

Schema evolution follows msgspec's rules (``docs/schema-evolution.rst``): adding a field with
a default, or removing a field, needs nothing at all, because the typed decoder fills defaults
and skips unknown keys. Anything else (a renamed or retyped field, a split event) is a new
*version* of the event, which must get a new tag (e.g. ``"job.submitted"`` ->
``"job.submitted.v2"``, or keep the stable tag on the new class and give the old layout's
records their old tag). An **upcaster** is registered under the OLD tag: a function
``raw dict -> raw dict`` that rewrites an old record's fields into a newer shape, tag field
included. Upcasters chain (v1 -> v2 -> v3) until the tag is one the union knows, then
``msgspec.convert`` builds the current Struct.

The slow path only runs when the typed decoder rejects a payload, so logs without old
events pay nothing. A tag nobody knows and nobody upcasts is :class:`UnknownEventError`,
naming the tag and the seq.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec

from .errors import EventDecodeError, UnknownEventError

#: An upcaster turns the raw (``dict``) form of an old event into a newer raw form.
Upcaster = Callable[[dict[str, Any]], dict[str, Any]]
Upcasters = Mapping[str, Upcaster]

_MAX_UPCAST_STEPS: Final = 64


def _tag_info(event_type: Any) -> tuple[set[str], set[Any]]:
    """(tag field names, known tag values) of a Struct type or a Union of Structs."""
    info = msgspec.inspect.type_info(event_type)
    types = info.types if isinstance(info, msgspec.inspect.UnionType) else (info,)
    fields: set[str] = set()
    tags: set[Any] = set()
    for t in types:
        if isinstance(t, msgspec.inspect.StructType) and t.tag_field is not None:
            fields.add(t.tag_field)
            tags.add(t.tag)
    return fields, tags


class EventCodec:
    """One encoder and one typed decoder for ``event_type``, plus the upcaster slow path."""

    __slots__ = ("_tag_fields", "_tags", "decoder", "encoder", "event_type", "upcasters")

    def __init__(self, event_type: Any, upcasters: Upcasters | None = None) -> None:
        self.event_type = event_type
        self.encoder = msgspec.msgpack.Encoder()
        self.decoder: msgspec.msgpack.Decoder[Any] = msgspec.msgpack.Decoder(event_type)
        self.upcasters: Upcasters = dict(upcasters or {})
        # Only the slow path needs the tags, and inspecting a large union costs tens of
        # milliseconds: a read of a few records must not pay it (see _tag_info_once).
        self._tag_fields: set[str] | None = None
        self._tags: set[Any] = set()

    def _tag_info_once(self) -> set[str]:
        if self._tag_fields is None:
            self._tag_fields, self._tags = _tag_info(self.event_type)
        return self._tag_fields

    def decode_slow(self, payload: bytes | memoryview, seq: int) -> Any:
        """Decode a payload the typed decoder rejected: upcast it, or explain why not."""
        try:
            raw = msgspec.msgpack.decode(payload)
        except msgspec.DecodeError as exc:
            raise EventDecodeError(seq, None, f"malformed msgpack: {exc}") from exc
        if not isinstance(raw, dict):
            raise EventDecodeError(seq, None, f"payload is a {type(raw).__name__}, not a map")
        tag_fields = self._tag_info_once()
        tag = self._tag_of(raw)
        steps = 0
        while tag in self.upcasters and steps < _MAX_UPCAST_STEPS:
            try:
                raw = self.upcasters[tag](dict(raw))
            except Exception as exc:
                exc.add_note(f"while upcasting record seq {seq} with tag {tag!r}")
                raise
            steps += 1
            new_tag = self._tag_of(raw)
            if new_tag == tag:
                break
            tag = new_tag
        if tag_fields and tag not in self._tags:
            raise UnknownEventError(seq, None if tag is None else str(tag))
        try:
            return msgspec.convert(raw, self.event_type)
        except msgspec.ValidationError as exc:
            raise EventDecodeError(seq, None if tag is None else str(tag), str(exc)) from exc

    def decode(self, payload: bytes | memoryview, seq: int) -> Any:
        """Decode one payload (fast typed path first)."""
        try:
            return self.decoder.decode(payload)
        except msgspec.DecodeError:
            return self.decode_slow(payload, seq)

    def _tag_of(self, raw: dict[str, Any]) -> Any:
        for name in self._tag_info_once():
            if name in raw:
                return raw[name]
        return None
