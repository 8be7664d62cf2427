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


@pytest.mark.parametrize(
    ("prefix", "why"),
    [
        ("C:/x", "names a drive"),
        ("a\\b", "path separator"),
        ("..\\x", "'..'"),
        ("my..render", "'..'"),
        ("..", "'..'"),
        ("a/b\x01c", "control character"),
    ],
)
def test_a_prefix_the_download_would_refuse_is_a_problem(prefix: str, why: str) -> None:
    """What the outputs' own checks refuse after the paid run (QA7 F5: these ran the whole
    graph, then failed unsafe_output_name, or were retried three times on a /view 400)."""
    problem = output_prefix_problem(prefix)
    assert problem is not None
    assert why in problem


@pytest.mark.parametrize("prefix", ["ComfyUI", "a/../b", "conjure/result", "x/", "..x/y", "./x"])
def test_a_prefix_inside_the_output_folder_is_fine(prefix: str) -> None:
    assert output_prefix_problem(prefix) is None


_PARTS = st.lists(st.sampled_from(["a", "b", "..", ".", "c.png", "..x"]), min_size=1, max_size=6)


@given(parts=_PARTS, absolute=st.booleans())
def test_the_rule_is_comfyuis_commonpath_check(parts: list[str], absolute: bool) -> None:
    """As ComfyUI's get_save_image_path: the normalized prefix's folder, joined to the output
    folder, must stay under it; and its /view refuses a file name holding '..'."""
    prefix = ("/" if absolute else "") + "/".join(parts)
    out = "/srv/comfyui/output"
    normal = posixpath.normpath(prefix)
    folder = posixpath.dirname(normal)
    full = posixpath.abspath(posixpath.join(out, folder))
    inside = posixpath.commonpath((out, full)) == out
    downloadable = ".." not in posixpath.basename(normal)  # ComfyUI's /view refuses the rest
    assert (output_prefix_problem(prefix) is None) == (inside and downloadable)


def test_check_values_names_the_node_and_input_without_a_catalogue() -> None:
    graph = {
        "3": {"class_type": "SaveImage", "inputs": {"filename_prefix": "../x", "images": ["2", 0]}}
    }
    (problem,) = check_values(graph, None)
    assert problem.startswith("node 3 (SaveImage) input 'filename_prefix': '../x' saves outside")
