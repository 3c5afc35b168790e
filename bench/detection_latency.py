"""Benchmark: outage detection latency in the lab, over repeated power-kill outages.

A lab of its own (``--fast`` timings: probe every 2 s, outage after 20 s, 2 successes
to recover) in a temporary directory. The probe's loop runs here as the probe flow
runs it (:class:`~ppo_dr.probe.checks.Prober` cycles every probe interval feeding a
:class:`~ppo_dr.probe.runner.ProbeRunner` on the lab's store), without Prefect: the
figure is the probe's, not the API's. For each outage, an app server (in turn) is
power-killed (``kill -9``); once the runner declares its incident, the server is
healed and the probe waits for the recovery before the next one.

Latency = declared time (the cycle that opened the incident) - fault time (taken just
BEFORE the kill, so the figure is an upper bound) - the outage threshold. The kill
lands at a random point of the probe interval (seeded), as a real fault would, not
right after a cycle. Expect roughly the time to the first failing check (0 to one
interval) plus a cycle's rounding: the run must be failing for the whole threshold
as seen by the checks, so the declaring check is the first one at or past it.

    .venv/bin/python bench/detection_latency.py [--outages 10] [--keep DIR]

Not run by CI. Takes about 30 s per outage.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.probe.checks import Prober
from ppo_dr.probe.runner import ProbeRunner
from ppo_dr.store import Store

#: Healthy cycles between outages (the recovery run, and then some).
SETTLE_CYCLES = 3
#: Give up on an outage not declared within threshold + this, in seconds.
DECLARE_SLACK_S = 30.0


class Outages:
    """The scenario, advanced once per probe cycle: settle, kill, await, heal, recover."""

    def __init__(self, lab: Lab, fleet: Fleet, count: int, seed: int = 1) -> None:
        self.lab, self.count = lab, count
        self.servers = [s.id for s in fleet.servers_by_role("app")]
        self.threshold = float(fleet.timing.outage_threshold)
        self.latencies: list[tuple[str, float]] = []
        self.healthy = 0
        self.victim: str | None = None
        self.fault_at: datetime | None = None
        self.recovering = False
        self.random = random.Random(seed)
        self.interval = float(fleet.timing.probe_interval)
        self.killer: asyncio.Task[None] | None = None

    async def _kill(self, victim: str, delay: float) -> None:
        await asyncio.sleep(delay)
        self.fault_at = datetime.now(UTC)
        await asyncio.to_thread(self.lab.break_, victim, "power")

    @property
    def done(self) -> bool:
        return len(self.latencies) >= self.count and self.victim is None

    async def step(self, runner: ProbeRunner, declared: list[tuple[str, datetime]]) -> None:
        if self.victim is None:
            self.healthy += 1
            if self.healthy >= SETTLE_CYCLES and len(self.latencies) < self.count:
                self.victim = self.servers[len(self.latencies) % len(self.servers)]
                self.fault_at = None
                delay = self.random.uniform(0, self.interval)
                self.killer = asyncio.create_task(self._kill(self.victim, delay))
            return
        if self.fault_at is None:
            return  # the kill is still to come, within this interval
        if not self.recovering:
            key = f"outage:server:{self.victim}"
            found = [at for k, at in declared if k == key]
            if found:
                latency = (found[0] - self.fault_at).total_seconds() - self.threshold
                self.latencies.append((self.victim, latency))
                print(f"  outage {len(self.latencies):2}: {self.victim:12} {latency:5.2f} s")
                self.recovering = True
                await asyncio.to_thread(self.lab.heal, self.victim)
            elif (datetime.now(UTC) - self.fault_at).total_seconds() > (
                self.threshold + DECLARE_SLACK_S
            ):
                raise SystemExit(f"{self.victim}: no outage declared in time")
            return
        if not runner.open_outages:
            self.victim, self.recovering, self.healthy = None, False, 0


async def run(lab: Lab, count: int) -> list[tuple[str, float]]:
    fleet = load_fleet(lab.fleet_file)
    interval = float(fleet.timing.probe_interval)
    scenario = Outages(lab, fleet, count)
    with Store(lab.store_url) as store:
        runner = ProbeRunner(fleet, store)
        runner.seed()
        checks = runner.checks()
        async with Prober(timeout_s=float(fleet.timing.probe_timeout)) as prober:
            while not scenario.done:
                started = time.monotonic()
                result = runner.cycle(await prober.run_cycle(checks))
                runner.heartbeat()
                declared = [(d.outage.key, d.incident.opened_at) for d in result.declared]
                await scenario.step(runner, declared)
                await asyncio.sleep(max(0.0, started + interval - time.monotonic()))
        runner.flush_minutes()
    return scenario.latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=int, default=10)
    parser.add_argument("--keep", type=Path, help="lab directory to use and keep")
    args = parser.parse_args()
    if args.outages < 1:
        raise SystemExit("--outages must be at least 1")
    with tempfile.TemporaryDirectory(prefix="ppo-dr-latency-") as tmp:
        lab = Lab(args.keep or Path(tmp) / "lab")
        lab.up(clients=4, size_mb=2, fast=True, timeout=60.0)
        try:
            fleet = load_fleet(lab.fleet_file)
            print(
                f"lab {lab.directory}: probe every {fleet.timing.probe_interval} s, outage "
                f"after {fleet.timing.outage_threshold} s; {args.outages} power-kill outages"
            )
            latencies = [latency for _, latency in asyncio.run(run(lab, args.outages))]
        finally:
            lab.down()
    print(
        f"detection latency (declared - fault - threshold) over {len(latencies)} outages: "
        f"median {statistics.median(latencies):.2f} s, max {max(latencies):.2f} s, "
        f"min {min(latencies):.2f} s (probe interval {fleet.timing.probe_interval} s)"
    )


if __name__ == "__main__":
    main()
