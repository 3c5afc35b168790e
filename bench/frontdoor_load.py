"""Benchmark: a probe cycle of every client's health page, through the front door vs direct.

Run it inside a running lab's wan namespace (where the probe's view comes from)::

    ip netns exec <prefix>-wan env PYTHONPATH=. .venv/bin/python -m bench.frontdoor_load \\
        --lab /srv/lab50 [--cycles 6]

or, for a loopback lab, without ``ip netns exec``. Each cycle checks every client's
``/c/<id>/health`` once, concurrently, with the probe's own :class:`~ppo_dr.probe.Prober`
(kept open across cycles, as the probe flow does). Ours goes through the front door
(the URL in fleet.yaml; with ``--door`` a second one too); the peer goes straight to
the client's home server's public HTTP endpoint (through netsim, as the front door
itself does), so the difference is what the front door adds. Cycles take turns so
every path sees the same load. Prints medians with min-max spread, why checks failed,
and the 1-minute load average.
Not run by CI.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_dr.inventory import load_fleet
from ppo_dr.probe import HttpCheck, Prober
from ppo_dr.probe.runner import client_health_url

TIMEOUT_S = 5.0


def spread(values: list[float]) -> str:
    """``median (min-max), n=N`` of *values*."""
    if not values:
        return "no samples"
    return f"{statistics.median(values):.2f} ({min(values):.2f}-{max(values):.2f}), n={len(values)}"


def checks(lab: Path, door_url: str | None) -> dict[str, list[HttpCheck]]:
    """Every client's health check per path: the lab's front door, straight to its home
    server, and (with *door_url*, ``http://host:port``) a second front door started
    beside the lab's, e.g. another version of it measured in the same run."""
    fleet = load_fleet(lab / "fleet.yaml")
    paths: dict[str, list[HttpCheck]] = {"front door": [], "direct": []}
    if door_url is not None:
        paths[door_url] = []
    for client in fleet.clients:
        http = fleet.server(client.server).http
        if http is None:
            continue
        base = {"front door": str(client.url), door_url: f"{door_url}/c/{client.id}/"}
        direct = f"http://{http.host}:{http.port}/c/{client.id}/health"
        for path, batch in paths.items():
            url = direct if path == "direct" else client_health_url(base[path])
            batch.append(HttpCheck(f"{path}:{client.id}", url))
    return paths


async def measure(paths: dict[str, list[HttpCheck]], cycles: int) -> dict[str, list[float]]:
    """Seconds per cycle per path, the paths taking turns; cold first cycles left out."""
    times: dict[str, list[float]] = {path: [] for path in paths}
    async with Prober(timeout_s=TIMEOUT_S) as prober:
        for batch in paths.values():
            await prober.run_cycle(batch)  # warm: connections opened, placements cached
        for _ in range(cycles):
            for path, batch in paths.items():
                started = time.perf_counter()
                observations = await prober.run_cycle(batch)
                times[path].append(time.perf_counter() - started)
                reasons = Counter(o.reason.split(":")[0] for o in observations if not o.ok)
                why = ", ".join(f"{n} {r}" for r, n in reasons.most_common(3)) or "none"
                print(
                    f"{path:24} {times[path][-1]:6.2f} s, failed: {why} "
                    f"(load {os.getloadavg()[0]:.1f})"
                )
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", type=Path, required=True, help="the lab's directory")
    parser.add_argument("--cycles", type=int, default=6, help="timed cycles per path")
    parser.add_argument("--door", help="another front door's http://host:port to measure")
    args = parser.parse_args()
    paths = checks(args.lab.resolve(), args.door)
    print(f"{len(paths['direct'])} clients; timeout {TIMEOUT_S:g} s per check")
    for path, times in asyncio.run(measure(paths, args.cycles)).items():
        print(f"{path:24} cycle, s: {spread(times)}")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
