"""Benchmark: a probe cycle of every client's health page, through the front door vs direct.

Run it inside a running lab's wan namespace (where the probe's view comes from)::

    ip netns exec <prefix>-wan env PYTHONPATH=. .venv/bin/python -m bench.frontdoor_load \\
        --lab /srv/lab50 [--cycles 6]

or, for a loopback lab, without ``ip netns exec``. Each cycle checks every client's
``/c/<id>/health`` once, concurrently, with the probe's own :class:`~ppo_dr.probe.Prober`
(kept open across cycles, as the probe flow does). Ours goes through the front door
(the URL in fleet.yaml); the peer goes straight to the client's home server's public
HTTP endpoint (through netsim, as the front door itself does), so the difference is
what the front door adds. Cycles alternate front door / direct so both see the same
load. Prints medians with min-max spread, failures, and the 1-minute load average.
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


def checks(lab: Path, door_url: str | None) -> tuple[list[HttpCheck], list[HttpCheck]]:
    """Every client's health check through the front door, and straight to its home server.

    *door_url* (``http://host:port``) replaces the front door's address in the clients'
    URLs, to measure a second front door started beside the lab's.
    """
    fleet = load_fleet(lab / "fleet.yaml")
    door: list[HttpCheck] = []
    direct: list[HttpCheck] = []
    for client in fleet.clients:
        http = fleet.server(client.server).http
        if http is None:
            continue
        url = str(client.url) if door_url is None else f"{door_url}/c/{client.id}/"
        door.append(HttpCheck(f"door:{client.id}", client_health_url(url)))
        direct.append(
            HttpCheck(f"direct:{client.id}", f"http://{http.host}:{http.port}/c/{client.id}/health")
        )
    return door, direct


async def measure(
    door: list[HttpCheck], direct: list[HttpCheck], cycles: int
) -> dict[str, tuple[list[float], int]]:
    """Seconds per cycle and failed checks in all, per path; cold first cycles left out."""
    results: dict[str, tuple[list[float], int]] = {"front door": ([], 0), "direct": ([], 0)}
    async with Prober(timeout_s=TIMEOUT_S) as prober:
        for path, batch in (("front door", door), ("direct", direct)):
            await prober.run_cycle(batch)  # warm: connections opened, placements cached
        for _ in range(cycles):
            for path, batch in (("front door", door), ("direct", direct)):
                started = time.perf_counter()
                observations = await prober.run_cycle(batch)
                took = time.perf_counter() - started
                times, failed = results[path]
                times.append(took)
                reasons = Counter(o.reason.split(":")[0] for o in observations if not o.ok)
                bad = sum(reasons.values())
                results[path] = (times, failed + bad)
                why = ", ".join(f"{n} {r}" for r, n in reasons.most_common(3))
                print(f"{path:10} {took:6.2f} s, {bad} failed {why} (load {os.getloadavg()[0]:.1f})")
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lab", type=Path, required=True, help="the lab's directory")
    parser.add_argument("--cycles", type=int, default=6, help="timed cycles per path")
    parser.add_argument("--door", help="another front door's http://host:port to measure")
    args = parser.parse_args()
    door, direct = checks(args.lab.resolve(), args.door)
    print(f"{len(door)} clients; timeout {TIMEOUT_S:g} s per check")
    results = asyncio.run(measure(door, direct, args.cycles))
    for path, (times, failed) in results.items():
        print(f"{path:10} cycle, s: {spread(times)}; failed checks {failed}")
    print(f"load average (1, 5, 15 min): {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
