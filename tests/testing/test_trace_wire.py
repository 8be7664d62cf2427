"""The progress_state frame as the trace benchmark's message path decodes it: its nodes stay
raw JSON until read, and read back exactly as a typed decode would give them."""

from __future__ import annotations

import json

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.clients.comfyui_wire import NodeState, ProgressStateMsg, parse_ws_message

_NODE = st.builds(
    lambda v, m, state, nid: {
        "value": v,
        "max": m,
        "state": state,
        "node_id": nid,
        "prompt_id": "p",
        "display_node_id": nid,
        "parent_node_id": None,
        "real_node_id": nid,
    },
    st.floats(0, 100),
    st.floats(0, 100),
    st.sampled_from(["pending", "running", "finished"]),
    st.text("0123456789", min_size=1, max_size=3),
)


@given(nodes=st.dictionaries(st.text("0123456789", min_size=1, max_size=3), _NODE, max_size=20))
def test_progress_state_nodes_read_as_a_typed_decode_gives_them(nodes: dict[str, dict]) -> None:
    """``data.nodes`` of a decoded progress_state frame equals the typed decode of its nodes."""
    frame = json.dumps({"type": "progress_state", "data": {"prompt_id": "p", "nodes": nodes}})
    msg = parse_ws_message(frame)
    assert isinstance(msg, ProgressStateMsg)
    expected = msgspec.json.Decoder(dict[str, NodeState]).decode(json.dumps(nodes))
    assert msg.data.nodes == expected


def test_progress_state_nodes_of_another_shape_fail_only_when_read() -> None:
    """A frame whose nodes are of another shape still routes by prompt id; reading the nodes
    raises a ValidationError."""
    msg = parse_ws_message('{"type":"progress_state","data":{"prompt_id":"p","nodes":[1]}}')
    assert isinstance(msg, ProgressStateMsg)
    assert msg.data.prompt_id == "p"
    with pytest.raises(msgspec.ValidationError):
        _ = msg.data.nodes
