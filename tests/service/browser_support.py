"""A real browser against a real ``serve``: Debian's Chromium driven by Playwright, a page
served from a loopback origin of its own (listed with ``--cors-origin``, as a front end on
another port is), and ``serve`` as a subprocess on a loopback port, on the embedded
simulated cloud.

The page (:data:`FOLLOW_PAGE`) opens one ``EventSource`` on the URL of its ``?src=`` and
records what the browser gives it in ``window.followed.log``: every event with its
``lastEventId``, every ``open`` and ``error`` with the source's ``readyState``, each with the
page's clock (ms). It has no reconnect code: what it gets after a cut is the browser's doing.
Opened again in the same tab, it passes the id of the last event it got as
``?last_event_id=`` (the README's way for a page reloaded).
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socketserver
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import httpx

CHROMIUM: Final = "/usr/bin/chromium"
"""Debian's Chromium (``apt-get install chromium``): Playwright never downloads a browser."""

CHROMIUM_ARGS: Final = (
    # Nothing outside this machine is reached: no component updates, no sync, no
    # safe-browsing or variations fetches, no proxy.
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-default-apps",
    "--disable-sync",
    "--no-first-run",
    "--no-proxy-server",
    # CI runs as root, where Chromium's sandbox cannot start.
    "--no-sandbox",
)

TERMINAL: Final = ("succeeded", "failed", "cancelled")

FOLLOW_PAGE: Final = b"""<!doctype html>
<meta charset="utf-8">
<title>follow</title>
<script>
  const log = [];
  // A page opened again (a reload, a return to it) resumes where it was, as the README says:
  // the lastEventId of the last event it got, as ?last_event_id= (an EventSource has no
  // lastEventId of its own: it is the events').
  const src = new URL(new URLSearchParams(location.search).get("src"));
  const had = sessionStorage.getItem("last-event-id");
  if (had !== null) src.searchParams.set("last_event_id", had);
  const source = new EventSource(src);
  window.followed = { log, source, had };
  for (const name of ["status", "progress", "output"]) {
    source.addEventListener(name, (e) => {
      const data = JSON.parse(e.data);
      log.push({ event: name, id: e.lastEventId, job: data.job_id ?? null,
                 status: data.status ?? null, at: performance.now() });
      sessionStorage.setItem("last-event-id", e.lastEventId);
    });
  }
  source.onopen = () => log.push({ event: "open", at: performance.now() });
  source.onerror = () =>
    log.push({ event: "error", state: source.readyState, at: performance.now() });
</script>
"""

WORKFLOW: Final = (
    Path(__file__).resolve().parents[2] / "conjure_actors" / "workflows" / "invert_save.json"
)


class _Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(FOLLOW_PAGE)))
        self.end_headers()
        self.wfile.write(FOLLOW_PAGE)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def page_origin() -> Iterator[str]:
    """A loopback origin (``http://127.0.0.1:PORT``) serving :data:`FOLLOW_PAGE`."""
    with socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Page) as server:
        server.daemon_threads = True
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            thread.join()


def follow_url(origin: str, stream: str) -> str:
    """The page at ``origin`` following ``stream`` (an absolute URL of ``serve``)."""
    return f"{origin}/follow.html?{urllib.parse.urlencode({'src': stream})}"


def _env() -> dict[str, str]:
    """This environment without credentials: ``serve`` embeds the simulated cloud."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("RUNCOMFY_", "CONJURE_"))}


class Serve:
    """A ``serve`` subprocess on ``log``; ``url`` is read from its first line."""

    def __init__(self, process: subprocess.Popen[bytes], url: str) -> None:
        self.process = process
        self.url = url

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @classmethod
    def start(cls, cwd: Path, log: Path, origin: str, port: int = 0) -> Serve:
        args = [sys.executable, "-m", "conjure_actors", "serve", "--log", str(log)]
        args += ["--port", str(port), "--cors-origin", origin, "--drain-timeout", "0"]
        process = subprocess.Popen(
            args, cwd=cwd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line:
            _, err = process.communicate(timeout=30)
            raise AssertionError(f"serve ended before its URL line: {err.decode()}")
        url = line.split()[-1]
        assert url.startswith("http://127.0.0.1:"), line
        return cls(process, url)

    def stop(self) -> None:
        """SIGTERM, and wait for it to exit 0."""
        self.process.send_signal(signal.SIGTERM)
        _, err = self.process.communicate(timeout=60)
        assert self.process.returncode == 0, err.decode()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=30)

    def submit(self, labels: dict[str, str] | None = None) -> dict[str, Any]:
        """A job of a quick workflow (the 201's job object)."""
        body: dict[str, Any] = {"workflow": json.loads(WORKFLOW.read_text())}
        if labels is not None:
            body["metadata"] = labels
        answer = httpx.post(f"{self.url}/api/v2/jobs", json=body, timeout=30)
        assert answer.status_code == 201, answer.text
        job: dict[str, Any] = answer.json()
        return job

    def wait_ended(self, job_id: str, within: float = 60) -> str:
        """Poll the job until its status is terminal (at most ``within`` s); that status."""
        deadline = time.monotonic() + within
        with httpx.Client(timeout=30) as http:
            while True:
                status: str = http.get(f"{self.url}/api/v2/jobs/{job_id}").json()["status"]
                if status in TERMINAL:
                    return status
                assert time.monotonic() < deadline, f"job {job_id} still {status}"
                time.sleep(0.1)  # a poll's interval, not a wait for something


@contextmanager
def serving(cwd: Path, log: Path, origin: str, port: int = 0) -> Iterator[Serve]:
    """:meth:`Serve.start`, killed at the end if still running (a failed test)."""
    serve = Serve.start(cwd, log, origin, port)
    try:
        yield serve
    finally:
        serve.kill()
