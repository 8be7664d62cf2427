"""A background call never holds a pool connection while it waits at the gate (found by review)."""

from __future__ import annotations

import httpx
import pytest
import trio

from conjure_actors.runtime import PriorityGate
from conjure_actors.service.foreground import yielding_http


async def _answer_after_20ms(stream: trio.SocketStream) -> None:
    try:
        while await stream.receive_some(65536):
            await trio.sleep(0.02)
            await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    except trio.BrokenResourceError:
        pass


@pytest.mark.slow
async def test_a_parked_background_answer_does_not_hold_the_pool_from_the_foreground() -> None:
    """Two job calls fill a pool of two connections, then a request arrives and calls out
    through the same client (as /api/conjure/mode's RunComfy probe does): it must get a
    connection once the two answers are in, not wait for the gate's bound (5 s here)."""
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, _answer_after_20ms, 0)
        url = f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}/"
        gate = PriorityGate(max_wait=5.0, turn=0.001)
        client = yielding_http(httpx.AsyncClient(limits=httpx.Limits(max_connections=2)))

        async def job_call() -> None:
            with gate.background():
                await client.get(url)

        for _ in range(2):
            nursery.start_soon(job_call)
        await trio.sleep(0.005)  # both sent while the gate was open
        with trio.fail_after(1), gate.foreground():  # today: waits ~5 s (the bound)
            answer = await client.get(url)
        assert answer.status_code == 200
        await client.aclose()
        nursery.cancel_scope.cancel()
