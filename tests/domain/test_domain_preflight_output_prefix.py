"""A save node's ``filename_prefix`` that leaves ComfyUI's output folder is refused before a
machine (QA F9: serve accepted it, the job ran its whole paid graph, and only the save, or
the download, refused it: ``unsafe_output_name``)."""

from __future__ import annotations

import posixpath

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conjure_actors.domain.preflight import check_values, output_prefix_problem


@pytest.mark.parametrize("prefix", ["../x", "/abs/x", "ok/../../x", "/x", "a/b/../../../x"])
def test_a_prefix_outside_the_output_folder_is_a_problem(prefix: str) -> None:
    problem = output_prefix_problem(prefix)
    assert problem is not None
    assert "outside ComfyUI's output folder" in problem


@pytest.mark.parametrize("prefix", ["ComfyUI", "a/../b", "conjure/result", "x/", "..x/y", "./x"])
def test_a_prefix_inside_the_output_folder_is_fine(prefix: str) -> None:
    assert output_prefix_problem(prefix) is None


_PARTS = st.lists(st.sampled_from(["a", "b", "..", ".", "c.png", "..x"]), min_size=1, max_size=6)


@given(parts=_PARTS, absolute=st.booleans())
def test_the_rule_is_comfyuis_commonpath_check(parts: list[str], absolute: bool) -> None:
    """As ComfyUI's get_save_image_path: the normalized prefix's folder, joined to the output
    folder, must stay under it."""
    prefix = ("/" if absolute else "") + "/".join(parts)
    out = "/srv/comfyui/output"
    folder = posixpath.dirname(posixpath.normpath(prefix))
    full = posixpath.abspath(posixpath.join(out, folder))
    inside = posixpath.commonpath((out, full)) == out
    assert (output_prefix_problem(prefix) is None) == inside


def test_check_values_names_the_node_and_input_without_a_catalogue() -> None:
    graph = {
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../x", "images": ["2", 0]}}
    }
    (problem,) = check_values(graph, None)
    assert problem.startswith("node 3 (SaveImage) input 'filename_prefix': '../x' saves outside")
