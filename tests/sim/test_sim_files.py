"""How the simulator numbers saved files: as ComfyUI's ``get_save_image_path`` does, one
more than the highest number among the folder's ``<prefix>_<number>...`` files, per prefix
and subfolder, without listing the folder at each save (issue 16)."""

from __future__ import annotations

import posixpath

import httpx
import trio
from hypothesis import given
from hypothesis import strategies as st
from sim_support import run_prompt

from conjure_actors.clock import TrioWallClock
from conjure_actors.sim.comfyui import ComfyUISim
from conjure_actors.sim.media import write_png


def listdir_counter(files: dict[str, bytes], kind: str, subfolder: str, prefix: str) -> int:
    """ComfyUI's own rule (folder_paths.get_save_image_path) over a listing of the folder."""
    folder = posixpath.normpath(posixpath.join(kind, subfolder))
    numbers = []
    for path in files:
        head, name = posixpath.split(path)
        if head != folder or name[: len(prefix) + 1] != prefix + "_":
            continue
        try:
            numbers.append(int(name[len(prefix) + 1 :].split("_")[0]))
        except ValueError:
            numbers.append(0)
    return max(numbers, default=0) + 1


def test_numbering_continues_after_the_files_on_disk_per_prefix_and_subfolder() -> None:
    """invert_00007_ on disk: the next is 8; other prefixes and subfolders count apart."""
    sim = ComfyUISim()
    sim.add_file("output/heldout/invert_00007_.png", b"x")
    sim.add_file("output/heldout/inverted_00020_.png", b"x")
    sim.add_file("output/other/invert_00030_.png", b"x")
    sim.add_file("output/invert_00040_.png", b"x")
    assert sim._counter("output", "heldout", "invert") == 8
    assert sim._counter("output", "heldout", "inverted") == 21
    assert sim._counter("output", "other", "invert") == 31
    assert sim._counter("output", "", "invert") == 41
    assert sim._counter("output", "heldout", "new") == 1
    assert sim._counter("temp", "heldout", "invert") == 1


async def test_a_batch_saves_consecutive_numbers_after_the_existing_ones(
    nursery: trio.Nursery, autojump_clock: trio.abc.Clock
) -> None:
    """SaveImage of a batch of 3 after invert_00002_: files 3, 4 and 5, then 6 next time."""
    sim = ComfyUISim(wall=TrioWallClock().now)
    sim.add_file("output/heldout/invert_00002_.png", write_png(8, 8, b"earlier"))
    await nursery.start(sim.run)
    prompt = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 3, "color": 1},
        },
        "2": {
            "class_type": "SaveImage",
            "inputs": {"images": ["1", 0], "filename_prefix": "heldout/invert"},
        },
    }
    transport = httpx.ASGITransport(app=sim.asgi)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim.invalid") as http:
        entry = await run_prompt(sim, http, nursery, {"prompt": prompt})
    names = [i["filename"] for i in entry["outputs"]["2"]["images"]]
    assert names == ["invert_00003_.png", "invert_00004_.png", "invert_00005_.png"]
    assert sim._counter("output", "heldout", "invert") == 6


def test_a_restart_forgets_the_temp_files_numbering_not_the_outputs() -> None:
    """temp/ is wiped when the server starts; output/ stays, and so does its numbering."""
    sim = ComfyUISim()
    sim.add_file("temp/ComfyUI_temp_abcde_00004_.png", b"x")
    sim.add_file("output/invert_00004_.png", b"x")
    sim.restart()
    assert sim._counter("temp", "", "ComfyUI_temp_abcde") == 1
    assert sim._counter("output", "", "invert") == 5


_NAMES = st.text(alphabet="ab_0129.", min_size=1, max_size=12)


@given(
    files=st.lists(
        st.tuples(st.sampled_from(["output", "output/s", "output/s/t", "temp"]), _NAMES),
        max_size=30,
    ),
    kind=st.sampled_from(["output", "temp"]),
    subfolder=st.sampled_from(["", "s", "s/t", "s/"]),
    prefix=st.text(alphabet="ab_", min_size=1, max_size=4),
)
def test_the_counter_is_comfyuis_listing_rule(
    files: list[tuple[str, str]], kind: str, subfolder: str, prefix: str
) -> None:
    """Whatever the files, the kept counter equals ComfyUI's listing of the folder."""
    sim = ComfyUISim()
    for folder, name in files:
        sim.add_file(f"{folder}/{name}", b"x")
    want = listdir_counter(sim._files, kind, subfolder, prefix)
    assert sim._counter(kind, subfolder, prefix) == want
