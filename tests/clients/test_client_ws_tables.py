"""The WebSocket frame tables of ``clients.comfyui`` (dispatch and translation by exact
type, issue 16) cover every frame type the wire decoder can produce."""

from __future__ import annotations

import typing

from conjure_actors.clients import comfyui as cu
from conjure_actors.clients import comfyui_wire as wire

WS_TYPES = set(typing.get_args(wire.WsMessage))


def test_dispatch_knows_every_decoded_frame_type() -> None:
    """Every decodable text frame type is routed or dropped on purpose (none falls to
    'unknown')."""
    assert set(cu._DISPATCH) == WS_TYPES


def test_every_routed_frame_type_translates() -> None:
    """Every frame type the socket routes to a follower (and binary frames) has a
    translation."""
    routed = {t for t, action in cu._DISPATCH.items() if action != cu._DROP}
    assert set(cu._TRANSLATE) == routed | {wire.BinaryFrame}


def test_translate_of_a_frame_type_without_meaning_is_nothing() -> None:
    """A frame type with no follow meaning translates to no update and no hint."""
    client = cu.ComfyUIClient("http://127.0.0.1:1", http=None)  # type: ignore[arg-type]
    status = wire.parse_ws_message('{"type":"status","data":{"status":{}}}')
    assert client._translate("p", status) == (None, False)
