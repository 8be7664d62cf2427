"""Benchmark of the actor runtime: tell throughput, ask round trips, 10,000 idle actors.

Each figure is printed beside a baseline measured in the same run (medians of REPEATS runs):

- tell -> one actor, vs a bare trio memory channel awaiting every send/receive, vs the
  ``send_nowait``/``receive_nowait`` fast path, vs ``asyncio.Queue(1024)`` (own event loop);
  targets: >= 1,000,000 msgs/s and >= 50% of asyncio.Queue;
- ask round trips, vs a bare ``trio.Event`` round trip over a memory channel; target >= 80%;
- 10,000 idle actors: memory per actor (tracemalloc) and time to start / stop them all, beside
  10,000 bare trio tasks each blocked on its own memory channel.

Run: ``python bench/actors.py`` (about 15 s on 2 cores).
"""

from __future__ import annotations

import asyncio
import gc
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable

import trio
import trio.testing

from conjure_actors.runtime import Actor, open_actor_system

REPEATS = 5
N_TELL = 200_000
N_ASK = 50_000
N_IDLE = 10_000
CAPACITY = 1024


def median_of(fn: Callable[[], float], repeats: int = REPEATS) -> float:
    """Median of ``repeats`` runs of ``fn`` (each returns seconds)."""
    return statistics.median(fn() for _ in range(repeats))


# -- baselines ----------------------------------------------------------------------------


def trio_channel_await() -> float:
    async def main() -> float:
        send, recv = trio.open_memory_channel[int](CAPACITY)

        async def consumer() -> None:
            for _ in range(N_TELL):
                await recv.receive()

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            for i in range(N_TELL):
                await send.send(i)
        return time.perf_counter() - start

    return trio.run(main)


def trio_channel_nowait() -> float:
    async def main() -> float:
        send, recv = trio.open_memory_channel[int](CAPACITY)

        async def consumer() -> None:
            got = 0
            while got < N_TELL:
                try:
                    recv.receive_nowait()
                except trio.WouldBlock:
                    await recv.receive()
                got += 1

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(consumer)
            for i in range(N_TELL):
                try:
                    send.send_nowait(i)
                except trio.WouldBlock:
                    await send.send(i)
        return time.perf_counter() - start

    return trio.run(main)


def asyncio_queue() -> float:
    async def main() -> float:
        queue: asyncio.Queue[int] = asyncio.Queue(CAPACITY)

        async def consumer() -> None:
            for _ in range(N_TELL):
                await queue.get()

        start = time.perf_counter()
        task = asyncio.create_task(consumer())
        for i in range(N_TELL):
            await queue.put(i)
        await task
        return time.perf_counter() - start

    return asyncio.run(main())


def trio_event_round_trip() -> float:
    async def main() -> float:
        send, recv = trio.open_memory_channel[trio.Event](CAPACITY)

        async def server() -> None:
            async for event in recv:
                event.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(server)
            start = time.perf_counter()
            for _ in range(N_ASK):
                event = trio.Event()
                send.send_nowait(event)
                await event.wait()
            elapsed = time.perf_counter() - start
            await send.aclose()
        return elapsed

    return trio.run(main)


# -- the runtime --------------------------------------------------------------------------


class Counter(Actor):
    def __init__(self) -> None:
        self.count = 0

    async def receive(self, msg: object) -> object:
        self.count += 1
        return msg


class Idle(Actor):
    async def receive(self, msg: object) -> object:
        return None


def runtime_tell() -> float:
    async def main() -> float:
        async with open_actor_system() as system:
            ref = await system.spawn(Counter, name="counter", mailbox_size=CAPACITY)
            tell = ref.tell
            start = time.perf_counter()
            for i in range(N_TELL):
                await tell(i)
            await ref.ask(None)  # every tell is handled once this answers
            elapsed = time.perf_counter() - start
            assert ref.statistics().handled == N_TELL + 1
        return elapsed

    return trio.run(main)


def runtime_ask() -> float:
    async def main() -> float:
        async with open_actor_system() as system:
            ref = await system.spawn(Counter, name="counter")
            ask = ref.ask
            start = time.perf_counter()
            for i in range(N_ASK):
                await ask(i)
            return time.perf_counter() - start

    return trio.run(main)


def idle_actors() -> tuple[float, float, float]:
    """(bytes per actor, seconds to start all, seconds to stop all)."""

    async def main() -> tuple[float, float, float]:
        gc.collect()
        async with open_actor_system() as system:
            start = time.perf_counter()
            for i in range(N_IDLE):
                await system.spawn(Idle, name=f"a{i}")
            started = time.perf_counter() - start
            stop_started = time.perf_counter()
        stopped = time.perf_counter() - stop_started
        # Memory in a separate pass: tracemalloc slows every allocation down.
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        async with open_actor_system() as system:
            for i in range(N_IDLE):
                await system.spawn(Idle, name=f"a{i}")
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
        return used / N_IDLE, started, stopped

    return trio.run(main)


def idle_tasks() -> tuple[float, float, float]:
    """The same for bare trio tasks, each blocked on its own memory channel."""

    async def main() -> tuple[float, float, float]:
        async def task(recv: trio.MemoryReceiveChannel[object]) -> None:
            async for _ in recv:
                pass

        async def start_all(sends: list[trio.MemorySendChannel[object]]) -> None:
            for _ in range(N_IDLE):
                send, recv = trio.open_memory_channel[object](CAPACITY)
                sends.append(send)
                nursery.start_soon(task, recv)
            await trio.testing.wait_all_tasks_blocked()

        gc.collect()
        sends: list[trio.MemorySendChannel[object]] = []
        async with trio.open_nursery() as nursery:
            start = time.perf_counter()
            await start_all(sends)
            started = time.perf_counter() - start
            stop_started = time.perf_counter()
            for send in reversed(sends):
                await send.aclose()
        stopped = time.perf_counter() - stop_started
        gc.collect()
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        sends = []
        async with trio.open_nursery() as nursery:
            await start_all(sends)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base
            tracemalloc.stop()
            for send in reversed(sends):
                await send.aclose()
        return used / N_IDLE, started, stopped

    return trio.run(main)


def paired(
    ours: Callable[[], float], base: Callable[[], float], n: int
) -> tuple[float, float, float]:
    """(our rate, baseline rate, ratio): medians over REPEATS runs, each run measuring the
    baseline and then ours back to back so that both see the same machine load; the ratio is
    the median of the per-run ratios."""
    pairs = []
    for _ in range(REPEATS):
        b = n / base()
        o = n / ours()
        pairs.append((o, b))
    return (
        statistics.median(o for o, _ in pairs),
        statistics.median(b for _, b in pairs),
        statistics.median(o / b for o, b in pairs),
    )


def main() -> int:
    print(f"python {sys.version.split()[0]}, trio {trio.__version__}; medians of {REPEATS} runs")
    rows = [
        (
            "tell -> one actor (msgs/s)",
            runtime_tell,
            "asyncio.Queue(1024)",
            asyncio_queue,
            N_TELL,
            0.5,
        ),
        (
            "tell -> one actor (msgs/s)",
            runtime_tell,
            "trio channel, await each",
            trio_channel_await,
            N_TELL,
            None,
        ),
        (
            "tell -> one actor (msgs/s)",
            runtime_tell,
            "trio channel, nowait path",
            trio_channel_nowait,
            N_TELL,
            None,
        ),
        (
            "ask round trips (/s)",
            runtime_ask,
            "trio.Event round trip",
            trio_event_round_trip,
            N_ASK,
            0.8,
        ),
    ]
    print()
    print(f"{'measure':<28} {'ours':>11}  {'baseline':<26} {'base':>11} {'ratio':>6}  target")
    tells = []
    for name, ours_fn, base_name, base_fn, n, target in rows:
        ours, base, ratio = paired(ours_fn, base_fn, n)
        if ours_fn is runtime_tell:
            tells.append(ours)
        verdict = (
            "" if target is None else f">= {target:.0%} " + ("ok" if ratio >= target else "MISSED")
        )
        print(f"{name:<28} {ours:>11,.0f}  {base_name:<26} {base:>11,.0f} {ratio:>6.2f}  {verdict}")
    tell = statistics.median(tells)
    print(f"tell >= 1,000,000 msgs/s: {'ok' if tell >= 1e6 else 'MISSED'} (median {tell:,.0f})")

    idle = [idle_actors() for _ in range(3)]
    bare = [idle_tasks() for _ in range(3)]
    med = [statistics.median(x[i] for x in idle) for i in range(3)]
    bmed = [statistics.median(x[i] for x in bare) for i in range(3)]
    print()
    head = f"{N_IDLE:,} idle actors (medians of 3)"
    print(f"{head:<33} {'actors':>10}  {'bare task+channel':>18} {'ratio':>6}")
    labels = ("memory per actor (bytes)", "start all (s)", "stop all (s)")
    for label, ours, base in zip(labels, med, bmed, strict=True):
        print(f"{label:<33} {ours:>10,.3f}  {base:>18,.3f} {ours / base:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
