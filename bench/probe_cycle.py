"""Benchmark: one probe cycle over 1,000 local targets, ours (aiohttp) vs httpx.

Four aiohttp servers run in a separate process on 127.0.0.1 (so their CPU is not
counted in the probe's RSS, and the probe's event loop is not serving them too).
The targets, fixed by a seed: 2 % answer after 1.5 s (slower than the 1 s latency
budget, so they count as failures "slow"), 3 % answer 503, 2 % point at a port
nobody listens on (refused); the rest answer 200 at once.

Ours: :class:`ppo_dr.probe.Prober`, kept open across cycles as the probe flow does
(one session, keep-alive connections). The peer: an ``httpx.AsyncClient`` doing the
same checks with the same concurrency and timeout. Each is timed over --cycles
cycles (median reported; the first, cold, cycle shown apart). Peak RSS is the probe
process's own high-water mark (``ru_maxrss``), taken after ours and again after the
peer (it only grows, so the peer's figure is an upper bound on both).

    .venv/bin/python bench/probe_cycle.py [--targets 1000] [--cycles 5]

With ``--store-writes`` it measures the bookkeeping instead (:func:`store_writes`):
write transactions and statements per cycle that the probe's runner sends to the
store with that many targets (measured 2026-11-30, 1,000 targets: 169.3 write
transactions per cycle and 465 ms of bookkeeping when every target's minute was its
own write and the heartbeat one per cycle; 1.8 and 25 ms with one batched write per
minute, of which the 30 first-cycle transitions are most).

Not run by CI. Target: a cycle under 3 s.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing as mp
import random
import resource
import socket
import statistics
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx  # a peer for the bench only; prefect brings it
from aiohttp import web

from ppo_dr.probe import HttpCheck, Observation, Prober

SERVERS = 4
SLOW_S = 1.5
BUDGET_MS = 1000.0
TIMEOUT_S = 5.0
CONCURRENCY = 300


# --------------------------------------------------------------------------- servers


def _serve(ready: Connection, count: int) -> None:
    """Child process: *count* aiohttp servers on 127.0.0.1; sends their ports, runs forever."""

    async def health(_r: web.Request) -> web.Response:
        return web.Response(text='{"status":"ok"}')

    async def down(_r: web.Request) -> web.Response:
        return web.Response(status=503, text="unavailable")

    async def slow(_r: web.Request) -> web.Response:
        await asyncio.sleep(SLOW_S)
        return web.Response(text='{"status":"ok"}')

    async def main() -> None:
        ports = []
        for _ in range(count):
            app = web.Application()
            app.router.add_get("/health/{n}", health)
            app.router.add_get("/down/{n}", down)
            app.router.add_get("/slow/{n}", slow)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
            await site.start()
            ports.append(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        ready.send(ports)
        await asyncio.Event().wait()

    asyncio.run(main())


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def targets(ports: list[int], n: int, seed: int = 6) -> list[HttpCheck]:
    rnd = random.Random(seed)
    kinds = ["slow"] * round(n * 0.02) + ["down"] * round(n * 0.03) + ["refused"] * round(n * 0.02)
    kinds += ["health"] * (n - len(kinds))
    rnd.shuffle(kinds)
    dead = _refused_port()
    out = []
    for i, kind in enumerate(kinds):
        port = dead if kind == "refused" else ports[i % len(ports)]
        path = "health" if kind == "refused" else kind
        out.append(
            HttpCheck(
                f"t{i:04d}-{kind}",
                f"http://127.0.0.1:{port}/{path}/{i}",
                latency_budget_ms=BUDGET_MS,
            )
        )
    return out


# --------------------------------------------------------------------------- the peer


async def _httpx_check(client: httpx.AsyncClient, slots: asyncio.Semaphore, c: HttpCheck) -> bool:
    async with slots:
        started = time.perf_counter()
        try:
            response = await client.get(c.url)
            ok = response.status_code in c.expect_status
        except httpx.HTTPError:
            ok = False
        took_ms = (time.perf_counter() - started) * 1000
        return ok and (c.latency_budget_ms is None or took_ms <= c.latency_budget_ms)


# --------------------------------------------------------------------------- timing


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


async def time_cycles(
    cycle: Callable[[], Awaitable[list[bool]]], cycles: int
) -> tuple[float, list[float], Counter[bool]]:
    cold_start = time.perf_counter()
    await cycle()
    cold = time.perf_counter() - cold_start
    times, results = [], Counter[bool]()
    for _ in range(cycles):
        start = time.perf_counter()
        oks = await cycle()
        times.append(time.perf_counter() - start)
        results = Counter(oks)
    return cold, times, results


async def bench(checks: list[HttpCheck], cycles: int) -> None:
    reasons: Counter[str] = Counter()

    async with Prober(timeout_s=TIMEOUT_S, concurrency=CONCURRENCY) as prober:

        async def ours() -> list[bool]:
            obs: list[Observation] = await prober.run_cycle(checks)
            reasons.clear()
            reasons.update(o.reason.split(":")[0] for o in obs)
            return [o.ok for o in obs]

        cold, times, results = await time_cycles(ours, cycles)
    rss_ours = peak_rss_mb()
    median = statistics.median(times)
    print(f"ours  (aiohttp {__import__('aiohttp').__version__}, Prober, {CONCURRENCY} slots)")
    print(f"  cold cycle {cold:.2f} s; warm cycles {', '.join(f'{t:.2f}' for t in times)} s")
    print(f"  median {median:.2f} s  ({'under' if median < 3 else 'OVER'} the 3 s target)")
    print(f"  ok {results[True]}, failed {results[False]}: {dict(sorted(reasons.items()))}")
    print(f"  peak RSS of the probe process {rss_ours:.0f} MB")

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    async with httpx.AsyncClient(timeout=TIMEOUT_S, limits=limits) as client:
        slots = asyncio.Semaphore(CONCURRENCY)

        async def peer() -> list[bool]:
            return list(await asyncio.gather(*(_httpx_check(client, slots, c) for c in checks)))

        p_cold, p_times, p_results = await time_cycles(peer, cycles)
    p_median = statistics.median(p_times)
    print(f"peer  (httpx {httpx.__version__} AsyncClient, same concurrency and timeout)")
    print(f"  cold cycle {p_cold:.2f} s; warm cycles {', '.join(f'{t:.2f}' for t in p_times)} s")
    print(f"  median {p_median:.2f} s; ok {p_results[True]}, failed {p_results[False]}")
    print(f"  peak RSS after both {peak_rss_mb():.0f} MB")
    print(f"ratio ours/httpx: {median / p_median:.2f}x the time")


# --------------------------------------------------------------------------- store writes


def store_writes(n_targets: int, minutes: int = 3) -> None:
    """What the probe's bookkeeping writes to the store per cycle, with *n_targets*.

    A :class:`ProbeRunner` on a fresh SQLite store is fed *minutes* of synthetic cycles
    (every probe interval of the example fleet, 10 s) over *n_targets* targets, 3 %
    failing throughout (each records one ``up -> pending`` transition; the run stays
    shorter than the outage threshold), plus the heartbeat each cycle, as the flow
    does. Counted with SQLAlchemy engine events: committed write transactions and the
    statements that changed rows (an executemany counts once).
    """
    import tempfile
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import event

    from ppo_dr.inventory import load_fleet
    from ppo_dr.probe.runner import ProbeRunner
    from ppo_dr.store import Store

    fleet = load_fleet(Path(__file__).resolve().parents[1] / "examples" / "fleet.yaml")
    interval = timedelta(seconds=fleet.timing.probe_interval)
    ids = [f"client:bench-{i:04d}" for i in range(n_targets)]
    failing = set(random.Random(7).sample(ids, k=max(1, n_targets * 3 // 100)))
    with tempfile.TemporaryDirectory() as tmp, Store(f"sqlite:///{tmp}/state.db") as store:
        store.upgrade()
        runner = ProbeRunner(fleet, store)
        start = datetime(2026, 11, 30, 6, 0, 5, tzinfo=UTC)
        runner.seed(now=start)
        counts = Counter[str]()

        def on_commit(_conn: object) -> None:
            counts["commits"] += 1

        def on_execute(_c: object, _cur: object, statement: str, *_a: object) -> None:
            if statement.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE")):
                counts["statements"] += 1

        event.listen(store.engine, "commit", on_commit)
        event.listen(store.engine, "before_cursor_execute", on_execute)
        cycles = 0
        at = start
        took = time.perf_counter()
        while at < start + timedelta(minutes=minutes):
            obs = [Observation(t, t not in failing, 3.0, "ok", at) for t in ids]
            runner.cycle(obs, now=at)
            runner.heartbeat(at)
            cycles += 1
            at += interval
        runner.flush_minutes()  # the end of the run
        took = time.perf_counter() - took
    print(
        f"store writes, {n_targets} targets, {cycles} cycles over {minutes} min "
        f"(every {interval.total_seconds():g} s), {len(failing)} failing:"
    )
    print(
        f"  {counts['commits']} write transactions ({counts['commits'] / cycles:.1f} per cycle), "
        f"{counts['statements']} writing statements ({counts['statements'] / cycles:.1f} per "
        f"cycle); bookkeeping {took / cycles * 1000:.0f} ms per cycle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=1000)
    parser.add_argument("--cycles", type=int, default=5)
    parser.add_argument(
        "--store-writes", action="store_true", help="only count the store writes per cycle"
    )
    args = parser.parse_args()
    if args.store_writes:
        store_writes(args.targets)
        return

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    servers = ctx.Process(target=_serve, args=(child, SERVERS), daemon=True)
    servers.start()
    try:
        if not parent.poll(30):
            raise SystemExit("the target servers did not start")
        ports: list[int] = parent.recv()
        checks = targets(ports, args.targets)
        kinds = Counter(c.target_id.split("-", 1)[1] for c in checks)
        print(
            f"{len(checks)} targets on {SERVERS} aiohttp servers (127.0.0.1:{ports}); "
            f"{dict(sorted(kinds.items()))}; slow = {SLOW_S} s vs budget {BUDGET_MS:.0f} ms; "
            f"timeout {TIMEOUT_S:g} s"
        )
        asyncio.run(bench(checks, args.cycles))
    finally:
        servers.terminate()
        servers.join(5)


if __name__ == "__main__":
    main()
