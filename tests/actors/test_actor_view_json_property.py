"""Property: ``event_json_line`` (``seq`` and ``ts`` written in front of the event's own
encoding) gives, byte for byte, the line of the dict it replaced (``{"seq", "ts"}`` updated
with ``msgspec.to_builtins(event)``), for any event of any type."""

from __future__ import annotations

import types
import typing
from typing import Any

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.actors.view import event_json_line
from conjure_actors.domain.events import EVENT_TYPES

_json = msgspec.json.Encoder()
TEXT = st.text(max_size=8)
FLOAT = st.floats(allow_nan=False, allow_infinity=False)


def reference_line(seq: int, ts: float, event: msgspec.Struct) -> str:
    """The line as it was built before: a dict, then one encode."""
    body: dict[str, Any] = {"seq": seq, "ts": round(ts, 6)}
    body.update(msgspec.to_builtins(event))
    return _json.encode(body).decode()


def _for_type(tp: Any) -> st.SearchStrategy[Any]:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: TEXT,
        int: st.integers(),
        float: FLOAT,
        bool: st.booleans(),
        type(None): st.none(),
    }
    if tp in simple:
        return simple[tp]
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(_for_type(a) for a in args))
    if origin is dict:
        return st.dictionaries(TEXT, TEXT, max_size=2)
    if origin is tuple:
        return st.lists(TEXT, max_size=3).map(tuple)
    raise NotImplementedError(f"no strategy for {tp!r}")


def _event(cls: type[msgspec.Struct]) -> st.SearchStrategy[Any]:
    fields = {f.name: _for_type(f.type) for f in msgspec.structs.fields(cls)}
    return st.fixed_dictionaries(fields).map(lambda kw: cls(**kw))


EVENTS = st.one_of(*(_event(cls) for cls in EVENT_TYPES))


@given(seq=st.integers(min_value=0, max_value=2**63 - 1), ts=FLOAT, event=EVENTS)
def test_event_json_line_is_the_line_of_the_dict(seq: int, ts: float, event: Any) -> None:
    """Any event, seq and ts: the same JSON line as the dict-built one."""
    assert event_json_line(seq, ts, event) == reference_line(seq, ts, event)


def test_event_json_line_of_a_struct_with_a_seq_field_keeps_the_dict_form() -> None:
    """A Struct with its own ``seq`` field: its value wins in place, as in the dict."""

    class Odd(msgspec.Struct, tag="odd"):
        seq: int = 9

    assert event_json_line(1, 2.0, Odd()) == reference_line(1, 2.0, Odd())
