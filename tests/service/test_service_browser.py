"""A real browser's ``EventSource`` against a real ``serve`` (the project's rule: "use a real
client where a user would"): the web page that ``serve`` backs follows its jobs with the
browser's own ``EventSource``, which reconnects by itself, sends ``Last-Event-ID``, honours
``retry:`` and stops reconnecting on a 204, behaviours our own SSE parser in the other stream
tests only stands in for. Debian's Chromium, headless, through Playwright
(``browser_support``); the page is on an origin of its own, listed with ``--cors-origin``, as
a front end is.

Real time (a real browser and a real server), but no fixed sleep: each wait is on a state
of the page (``wait_for_function``) or of a job, bounded."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import TERMINAL, follow_url, page_origin, serving

pytestmark = pytest.mark.slow

LABEL = "/api/conjure/events?metadata%5Bbrowser%5D=1"
FRAMES = ("status", "progress", "output")
WAIT_MS = 30_000
"""A wait on the page at most (a job on the embedded cloud ends in a few seconds)."""


def log_of(page: Any) -> list[dict[str, Any]]:
    """What the page's ``EventSource`` gave it (``browser_support.FOLLOW_PAGE``)."""
    log: list[dict[str, Any]] = page.evaluate("window.followed.log")
    return log


def wait_ended_on_page(page: Any, job_id: str) -> None:
    page.wait_for_function(
        """([job, terminal]) => window.followed.log.some(
               (e) => e.event === "status" && e.job === job && terminal.includes(e.status))""",
        arg=[job_id, list(TERMINAL)],
        timeout=WAIT_MS,
    )


def stream_requests(page: Any, path: str) -> list[Any]:
    """The page's requests to ``path`` (its ``EventSource``'s connects), as they are made."""
    made: list[Any] = []
    page.on("request", lambda request: made.append(request) if path in request.url else None)
    return made


def test_a_page_follows_a_labelled_job_to_its_terminal_status(browser: Any, tmp_path: Path) -> None:
    """A cross-origin page's EventSource on a label gets the job's frames in order, each with
    an id, its output, and its terminal status last."""
    with page_origin() as origin, serving(tmp_path, tmp_path / "s.log", origin) as serve:
        page = browser.new_page()
        page.goto(follow_url(origin, serve.url + LABEL))
        page.wait_for_function("window.followed.log.some((e) => e.event === 'open')")
        job = serve.submit({"browser": "1"})
        wait_ended_on_page(page, job["id"])
        log = log_of(page)
        page.close()
    frames = [e for e in log if e["event"] in FRAMES]
    assert {e["job"] for e in frames} == {job["id"]}
    statuses = [e["status"] for e in frames if e["event"] == "status"]
    assert statuses[-1] == "succeeded"
    assert frames[-1]["event"] == "status"
    assert statuses[0] in ("queued", "running")
    assert "output" in [e["event"] for e in frames]
    ids = [int(e["id"].partition("-")[0]) for e in frames]
    assert ids == sorted(ids), ids
    assert [e["event"] for e in log if e["event"] in ("open", "error")] == ["open"]


def test_a_page_resumes_by_itself_across_a_restart_of_serve_on_the_same_port(
    browser: Any, tmp_path: Path
) -> None:
    """serve stops while the page follows a label, the log moves on while it is down (a job
    ends: run by a serve on another port, so that it ends before the page is back), and it
    starts again on the same port and log: the browser reconnects by itself with the id it
    had as Last-Event-ID and gets the job that ended meanwhile, not the one it had."""
    log = tmp_path / "s.log"
    with page_origin() as origin:
        with serving(tmp_path, log, origin) as serve:
            port = serve.port
            page = browser.new_page()
            connects = stream_requests(page, LABEL)
            page.goto(follow_url(origin, serve.url + LABEL))
            before = serve.submit({"browser": "1"})
            wait_ended_on_page(page, before["id"])
            had = log_of(page)[-1]["id"]  # the id of the last event the page got
            serve.stop()
        page.wait_for_function("window.followed.source.readyState === EventSource.CONNECTING")
        with serving(tmp_path, log, origin) as meanwhile:
            during = meanwhile.submit({"browser": "1"})
            assert meanwhile.wait_ended(during["id"]) == "succeeded"
            meanwhile.stop()
        with serving(tmp_path, log, origin, port=port):
            wait_ended_on_page(page, during["id"])
            got = log_of(page)
            resumed = [r.all_headers().get("last-event-id") for r in connects]
            page.close()
    opened = [i for i, e in enumerate(got) if e["event"] == "open"]
    assert len(opened) == 2, got
    again = {e["job"] for e in got[opened[1] :] if e["event"] in ("status", "progress", "output")}
    assert again == {during["id"]}
    assert resumed[0] is None
    assert resumed[-1] == had
    assert int(had.partition("-")[0]) > 0


@pytest.mark.parametrize("stream", ["job", "conjure"])
def test_a_job_stream_ended_is_answered_204_and_the_browser_stops_reconnecting(
    browser: Any, tmp_path: Path, stream: str
) -> None:
    """The per-job stream (and a ``?job=`` one) ends after the terminal status; the browser
    reconnects once, after the stream's retry (5 s, not its own 3 s), with the terminal
    frame's id, gets 204 and closes the EventSource: no reconnect loop."""
    with page_origin() as origin, serving(tmp_path, tmp_path / "s.log", origin) as serve:
        job = serve.submit()
        page = browser.new_page()
        events = (
            job["urls"]["events"] if stream == "job" else f"/api/conjure/events?job={job['id']}"
        )
        connects = stream_requests(page, events)
        page.goto(follow_url(origin, serve.url + events))
        page.wait_for_function(
            "window.followed.source.readyState === EventSource.CLOSED", timeout=WAIT_MS
        )
        log = log_of(page)
        answers = [(r.all_headers().get("last-event-id"), r.response().status) for r in connects]
        page.close()
    frames = [e for e in log if e["event"] == "status"]
    assert frames[-1]["status"] == "succeeded"
    cut, closed = [e for e in log if e["event"] == "error"]
    assert (cut["state"], closed["state"]) == (0, 2)  # CONNECTING (reconnects), then CLOSED
    assert closed["at"] - cut["at"] >= 4500, log
    assert answers == [(None, 200), (frames[-1]["id"], 204)]


def test_a_quiet_page_resumes_from_the_id_of_a_frame_with_no_event(
    browser: Any, tmp_path: Path
) -> None:
    """A label with no job: its stream's first frame has an id and no event (as the id-only
    frames that move a quiet stream's id on); the browser keeps that id, and sends it on its
    reconnect after a restart of serve on the same port: it resumes from where the log was,
    not with a full snapshot."""
    quiet = "/api/conjure/events?metadata%5Bbrowser%5D=quiet"
    log = tmp_path / "s.log"
    with page_origin() as origin:
        with serving(tmp_path, log, origin) as serve:
            port = serve.port
            page = browser.new_page()
            connects = stream_requests(page, quiet)
            page.goto(follow_url(origin, serve.url + quiet))
            page.wait_for_function("window.followed.log.some((e) => e.event === 'open')")
            with httpx.stream("GET", serve.url + quiet, timeout=30) as first:
                lines = first.iter_lines()
                block = next(lines), next(lines)  # "id: N", "retry: 5000"
            serve.stop()
        with serving(tmp_path, log, origin, port=port):
            page.wait_for_function(
                "window.followed.log.filter((e) => e.event === 'open').length === 2",
                timeout=WAIT_MS,
            )
            resumed = [r.all_headers().get("last-event-id") for r in connects]
            got = log_of(page)
            page.close()
    sent = dict(line.split(": ", 1) for line in block)
    assert not [e for e in got if e["event"] in FRAMES]
    assert resumed[0] is None
    assert resumed[-1] == sent["id"]


def test_a_page_opened_again_resumes_from_the_last_event_id_it_got(
    browser: Any, tmp_path: Path
) -> None:
    """The README's way for a page reloaded: the lastEventId of the last event it got, as
    ?last_event_id= on its new EventSource: it gets the job that ended while it was away,
    not the one it had."""
    with page_origin() as origin, serving(tmp_path, tmp_path / "s.log", origin) as serve:
        page = browser.new_page()
        url = follow_url(origin, serve.url + LABEL)
        page.goto(url)
        before = serve.submit({"browser": "1"})
        wait_ended_on_page(page, before["id"])
        had = log_of(page)[-1]["id"]
        page.goto("about:blank")
        away = serve.submit({"browser": "1"})
        assert serve.wait_ended(away["id"]) == "succeeded"
        page.goto(url)
        wait_ended_on_page(page, away["id"])
        got = log_of(page)
        sent = page.evaluate("window.followed.had")
        page.close()
    assert sent == had
    assert {e["job"] for e in got if e["event"] in FRAMES} == {away["id"]}
