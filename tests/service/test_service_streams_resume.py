"""Event streams a page resumes (QA F10): every frame of ``/api/conjure/events`` and of
``/api/v2/jobs/{id}/events`` has an ``id:`` (a journal seq), and a reconnect with
``Last-Event-ID`` gets only the jobs that changed after it: the ended jobs of a label were
all sent again, whole, on every reconnect of an ``EventSource`` (95 jobs: 247 kB each time),
their frames having no id to resume from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import trio
from extras_support import open_extras_service, wait_for, wait_idle
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs
from streams_support import events_of, ids_of, read_blocks, seq_of
from test_service_streams import TERMINAL, graph, one_machine, served, submit

import eventlog
from conjure_actors.actors.assets import Retention
from conjure_actors.clock import TrioWallClock
from conjure_actors.domain.events import Event
from conjure_actors.service import streams
from conjure_actors.service.app import Settings
from conjure_actors.sim.timings import ComfyTimings

LABEL = "/api/conjure/events?metadata%5Bbulk%5D=1"
EXAMPLES = 50 if os.environ.get("HYPOTHESIS_PROFILE") == "fuzz" else 2
TOKEN = "tok-5e1f9a0c7b3d2468"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def visit(run: Any, path: str, last_event_id: str | None = None) -> list[dict[str, str]]:
    """The blocks a label stream sends until the page leaves (once its snapshot is sent)."""
    leave, opened = trio.Event(), trio.Event()
    got: list[Any] = []

    async def read() -> None:
        got.append(
            await read_blocks(
                run.app, path, last_event_id=last_event_id, leave=leave, opened=opened
            )
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(read)
        await opened.wait()
        await trio.sleep(0.01)  # the snapshot's frames are written in one go, this after them
        leave.set()
    status, blocks = got[0]
    assert status == 200
    return list(blocks)


def ended_jobs(blocks: list[dict[str, str]]) -> set[str]:
    """The jobs whose terminal status the blocks have."""
    return {
        data["job_id"]
        for name, data in events_of(blocks)
        if name == "status" and data["status"] in TERMINAL
    }


def assert_monotonic(ids: list[int]) -> None:
    assert ids == sorted(ids), ids


async def test_a_reconnect_gets_only_the_jobs_that_ended_after_its_last_event_id(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            before = [await submit(run, {"bulk": "1"}) for _ in range(3)]
            await wait_for(run.service, served(*before))
            first = await visit(run, LABEL)
            later = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(later))
            again = await visit(run, LABEL, last_event_id=first[-1]["id"])
    assert ended_jobs(first) == set(before)
    assert ended_jobs(again) == {later}
    assert {data["job_id"] for _, data in events_of(again)} == {later}
    assert_monotonic(ids_of(first) + ids_of(again))


async def test_a_job_live_at_the_cut_is_sent_on_the_reconnect_with_what_it_became(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Cut while one job runs and one waits for the machine: the reconnect has both again,
    the one that ended meanwhile with its terminal status, and not the one that ended before
    the cut."""
    with trio.fail_after(3600):
        slow = ComfyTimings(scale=100)
        async with open_extras_service(tmp_path, config=one_machine(), comfy=slow) as run:
            done = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(done))
            running = await submit(run, {"bulk": "1"}, name="slow_blur_chain.json")
            queued = await submit(run, {"bulk": "1"}, name="slow_blur_chain.json")
            await wait_for(run.service, served(running, status="running"))
            first = await visit(run, LABEL)
            await wait_for(run.service, served(running))
            again = await visit(run, LABEL, last_event_id=first[-1]["id"])
    assert ended_jobs(first) == {done}
    assert ended_jobs(again) == {running}
    assert {data["job_id"] for _, data in events_of(again)} == {running, queued}


async def test_ids_stay_valid_across_a_restart_of_serve_on_the_same_log(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """An id from before a restart: the jobs that ended after it (before the restart: read
    back from the log) are sent, the ones that ended before it are not, and the new frames'
    ids follow it."""
    log = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            before = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(before))
            first = await visit(run, LABEL)
            after = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(after))
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            assert run.service.changes.started > seq_of(first[-1]["id"])
            again = await visit(run, LABEL, last_event_id=first[-1]["id"])
    assert ended_jobs(first) == {before}
    assert ended_jobs(again) == {after}
    assert_monotonic(ids_of(first) + ids_of(again))


async def test_an_id_not_of_this_log_gets_the_full_snapshot(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """Malformed, or past the log's end (another log's): the stream starts as a first
    connect does (never an error: an EventSource cannot be told to drop its id)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            ids = [await submit(run, {"bulk": "1"}) for _ in range(2)]
            await wait_for(run.service, served(*ids))
            future = str(run.service.journal.last_seq + 10**6)
            query = "&".join(f"job={job_id}" for job_id in ids)
            got = {
                sent: await read_blocks(run.app, f"/api/conjure/events?{query}", last_event_id=sent)
                for sent in ("", "abc", "-3", "1.5", "0", "0x10", "١٢", "9" * 23, future)
            }
    for sent, (status, blocks) in got.items():
        assert (status, ended_jobs(blocks)) == (200, set(ids)), sent


async def test_an_id_of_another_log_gets_the_full_snapshot(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A page that followed another serve on the same address (another log, whose seq is
    one of this longer log's too) resumes on this one from nothing, not past its jobs."""
    wall = TrioWallClock()  # the second log starts later, as a real one does
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path / "other", wall=wall) as run:
            for _ in range(2):
                await wait_for(run.service, served(await submit(run, {"bulk": "1"})))
            other = await visit(run, LABEL)
        async with open_extras_service(tmp_path / "this", wall=wall) as run:
            jobs = [await submit(run, {"bulk": "1"}) for _ in range(4)]
            await wait_for(run.service, served(*jobs))
            ends = sorted(run.service.changes.last.values())
            assert ends[0] < seq_of(other[-1]["id"]) < ends[-1]  # it would leave some out
            again = await visit(run, LABEL, last_event_id=other[-1]["id"])
    assert ended_jobs(again) == set(jobs)


async def test_an_id_older_than_the_resume_window_gets_the_full_snapshot(
    tmp_path: Path, autojump_clock: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    log = eventlog.MemoryLog(Event)
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, log=log) as run:
            early = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(early))
            first = await visit(run, LABEL)
            later = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(later))
        log.close()
        async with open_extras_service(tmp_path, log=log.reopen()) as run:
            window = run.service.changes.started - seq_of(first[-1]["id"]) - 1
            monkeypatch.setattr("conjure_actors.service.resume.RESUME_WINDOW", window)
            again = await visit(run, LABEL, last_event_id=first[-1]["id"])
    assert ended_jobs(again) == {early, later}


async def test_a_job_stream_resumed_after_its_end_is_answered_204(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """The per-job stream ends at the job's end, and an EventSource then reconnects by
    itself: with the id of the terminal frame it gets 204 (it stops), with an earlier one
    the terminal status."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            job_id = await submit(run)
            path = f"/api/v2/jobs/{job_id}/events"
            status, blocks = await read_blocks(run.app, path)
            await wait_idle(run.service)
            resumed = await read_blocks(run.app, path, last_event_id=blocks[-1]["id"])
            early = await read_blocks(run.app, path, last_event_id=blocks[0]["id"])
    assert status == 200
    assert_monotonic(ids_of(blocks))
    assert blocks[0]["retry"] == "5000"
    assert events_of(blocks)[-1][1]["status"] == "succeeded"
    assert resumed == (204, [])
    assert early[0] == 200
    (name, data) = events_of(early[1])[-1]  # the terminal status last, as on a live stream
    assert (name, data["status"]) == ("status", "succeeded")


async def test_a_stream_of_job_ids_that_all_ended_before_the_id_is_answered_204(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            ids = [await submit(run) for _ in range(2)]
            query = "&".join(f"job={job_id}" for job_id in ids)
            status, blocks = await read_blocks(run.app, f"/api/conjure/events?{query}")
            resumed = await read_blocks(
                run.app, f"/api/conjure/events?{query}", last_event_id=blocks[-1]["id"]
            )
    assert status == 200
    assert ended_jobs(blocks) == set(ids)
    assert resumed == (204, [])


async def test_ended_false_leaves_out_the_jobs_that_had_ended_on_a_first_connect(
    tmp_path: Path, autojump_clock: Any
) -> None:
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            done = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(done))
            live = await submit(run, {"bulk": "1"}, name="slow_blur_chain.json")
            await wait_for(run.service, served(live, status="running"))
            blocks = await visit(run, f"{LABEL}&ended=false")
            bad = await run.client.get(f"{LABEL}&ended=no")
    assert {data["job_id"] for _, data in events_of(blocks)} == {live}
    assert bad.status_code == 400


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_the_last_event_id_query_parameter_resumes_as_the_header_does(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """For a new EventSource (it sets no header): ``?last_event_id=``, also in a signed URL
    from ``/api/conjure/events/url``; the header wins over it (an EventSource's reconnect
    sends the header to the URL it was opened with)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path, token=TOKEN) as run:
            body = {"workflow": graph(), "metadata": {"bulk": "1"}}
            before = (await run.client.post("/api/v2/jobs", json=body, headers=AUTH)).json()["id"]
            await wait_for(run.service, served(before))
            url = await run.client.get(f"{LABEL.replace('events', 'events/url')}", headers=AUTH)
            first = await visit(run, url.json()["url"])
            later = (await run.client.post("/api/v2/jobs", json=body, headers=AUTH)).json()["id"]
            await wait_for(run.service, served(later))
            minted = await run.client.get(
                "/api/conjure/events/url",
                params={"metadata[bulk]": "1", "last_event_id": first[-1]["id"]},
                headers=AUTH,
            )
            signed = await visit(run, minted.json()["url"])
            header_wins = await visit(run, minted.json()["url"], last_event_id="0")
    assert ended_jobs(first) == {before}
    assert ended_jobs(signed) == {later}
    assert ended_jobs(header_wins) == {before, later}


async def test_a_quiet_stream_moves_its_id_on_with_id_only_frames(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A label with no job while others run: an id-only frame (no event) at most every
    CHECKPOINT_EVERY seconds, so that its reconnect resumes from near the log's end."""
    leave, opened = trio.Event(), trio.Event()
    got: list[Any] = []
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:

            async def read() -> None:
                got.append(
                    await read_blocks(
                        run.app,
                        "/api/conjure/events?metadata%5Btab%5D=9",
                        leave=leave,
                        opened=opened,
                    )
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read)
                await opened.wait()
                await submit(run, {"tab": "1"})
                await wait_idle(run.service)
                end = run.service.journal.last_seq
                await trio.sleep(streams.CHECKPOINT_EVERY + 1)
                leave.set()
    _, blocks = got[0]
    assert not events_of(blocks)
    assert blocks[0]["retry"] == "5000"
    assert seq_of(blocks[-1]["id"]) >= end
    assert_monotonic(ids_of(blocks))


OWN_TAG = "{own}"  # replaced by the log's tag once the service runs
ids_given = hs.one_of(
    hs.text(hs.characters(blacklist_characters="\r\n\x00"), max_size=30),
    hs.integers(-5, 10**25).map(str),
    hs.integers(0, 200).map(lambda n: f" {n}\t"),
    hs.integers(0, 200).map(lambda n: f"\u2003{n}"),
    hs.tuples(hs.integers(0, 200), hs.sampled_from([OWN_TAG, "0badc0de", ""])).map(
        lambda t: f"{t[0]}-{t[1]}"
    ),
)


def expected_seq(given: str, tag: str, last: int) -> int:
    """The seq a stream resumes from for ``given`` (0: none): ``SEQ-TAG`` with this log's
    tag or a bare seq, within the log."""
    digits, dash, theirs = given.strip(" \t").partition("-")
    if dash and theirs != tag:
        return 0
    seq = int(digits) if digits.isascii() and digits.isdigit() else 0
    return seq if 0 < seq <= last else 0


@settings(max_examples=EXAMPLES, suppress_health_check=list(HealthCheck), deadline=None)
@given(data=hs.data())
async def test_any_last_event_id_gets_a_stream_never_an_error(
    tmp_path_factory: pytest.TempPathFactory, autojump_clock: Any, data: hs.DataObject
) -> None:
    """Any ``Last-Event-ID`` (header or query): 200 with the jobs that ended after it, all
    of them unless it is a seq of the log, or 204 when that is none of them."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path_factory.mktemp("s")) as run:
            ids = [await submit(run) for _ in range(3)]
            await wait_for(run.service, served(*ids))
            query = "&".join(f"job={job_id}" for job_id in ids)
            path = f"/api/conjure/events?{query}"
            ends = {j: run.service.changes.last[j] for j in ids}
            tag = await run.service.changes.tag()
            for _ in range(8):
                given = data.draw(ids_given).replace(OWN_TAG, tag)
                last = run.service.journal.last_seq  # as the stream reads it
                if data.draw(hs.booleans()):
                    got = await read_blocks(run.app, path, last_event_id=given)
                else:
                    got = await read_blocks(
                        run.app, f"{path}&{urlencode({'last_event_id': given})}"
                    )
                seq = expected_seq(given, tag, last)
                expected = {j for j, end in ends.items() if end > seq}
                assert got[0] == (200 if expected else 204), (given, got)
                assert ended_jobs(got[1]) == expected, given


async def test_an_ended_jobs_terminal_status_is_its_last_frame_in_a_label_snapshot(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """A page stops following a job at its terminal status: a snapshot's ended job has its
    progress before it, not after (it came after, so the page missed it or saw it as news)."""
    with trio.fail_after(3600):
        async with open_extras_service(tmp_path) as run:
            job = await submit(run, {"bulk": "1"})
            await wait_for(run.service, served(job))
            blocks = await visit(run, LABEL)
    frames = [(name, data) for name, data in events_of(blocks) if data["job_id"] == job]
    assert [name for name, _ in frames] == ["progress", "status"]
    assert frames[-1][1]["status"] == "succeeded"


@pytest.mark.slow  # (just test <= 30 s: CI and just check run it)
async def test_a_resumed_job_stream_leaves_out_a_job_expired_since_and_follows_the_others(
    tmp_path: Path, autojump_clock: Any
) -> None:
    """``?job=A&job=B``, A ended and sent, then past its retention: the EventSource's
    reconnect is 200 with B (it was 404 for A: the browser closed the stream for good and
    the page never learnt B's end, QA9 F3)."""
    minute = Settings(retention=Retention(jobs=60.0, assets=60.0))
    with trio.fail_after(36_000):
        async with open_extras_service(
            tmp_path, settings=minute, comfy=ComfyTimings(scale=100)
        ) as run:
            a = await submit(run)
            await wait_for(run.service, served(a))
            b = await submit(run, name="slow_blur_chain.json")
            path = f"/api/conjure/events?job={a}&job={b}"
            first = await visit(run, path)
            await trio.sleep(61)  # A past its retention; B ended since, or runs
            gone = await run.client.get(f"/api/v2/jobs/{a}")
            again = await visit(run, path, last_event_id=first[-1]["id"])
    assert gone.status_code == 404
    assert {data["job_id"] for _, data in events_of(again)} == {b}
