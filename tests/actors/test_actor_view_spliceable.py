"""``event_json_line`` decides whether a Struct type can be spliced from the class's encoded
field names, without resolving its fields' type annotations (issue 16: that resolution was
~600 Python bytecodes per event type of a run)."""

from __future__ import annotations

import json

import msgspec

from conjure_actors.actors.view import event_json_line


class _Late(msgspec.Struct, frozen=True, tag="test.late"):
    # An annotation that resolves to nothing: msgspec.structs.fields() would raise on it,
    # encoding never looks at it.
    value: NotDefinedAnywhere  # type: ignore[name-defined]  # noqa: F821


def test_a_struct_is_spliced_without_resolving_its_annotations() -> None:
    line = event_json_line(7, 1.5, _Late(value=3))
    assert json.loads(line) == {"seq": 7, "ts": 1.5, "type": "test.late", "value": 3}
    assert line.startswith('{"seq":7,"ts":1.5,"type":"test.late"')
