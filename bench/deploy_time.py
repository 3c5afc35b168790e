"""Benchmark: ``ppo-dr deploy``'s wall time, deployments one at a time against 8 at once.

On a control plane of its own (:mod:`ppo_dr.lab.controlplane`: PostgreSQL, Redis, two
API servers, services, HAProxy) and the normal lab's generated fleet (``--scale 50x20``
has 61 deployments), each round deploys twice, alternating which goes first: one at a
time (the old, sequential deploy) and :data:`~deployments.deploy.APPLY_AT_ONCE` (8) at once. Before
each deploy every deployment is deleted, so both register from scratch (a second deploy
of the same declaration is an update, not a creation). Pools, limits and automations
are created by a first deploy and then left: a few calls of the same cost either way.
Medians with min and max, and the load average.

    PYTHONPATH=. .venv/bin/python -m bench.deploy_time [--rounds 3]

Not run by CI. About 1 minute plus 2 deploys a round.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from deployments.deploy import APPLY_AT_ONCE, deploy
from ppo_dr.lab import controlplane
from tests.lab.test_topology import make_fleet


def delete_deployments(api_url: str) -> None:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        for deployment in client.read_deployments(limit=200):
            client.delete_deployment(deployment.id)


def timed_deploy(api_url: str, fleet_file: Path, at_once: int) -> tuple[float, int]:
    """Seconds one deploy took with *at_once* deployments in flight, and their count."""
    delete_deployments(api_url)
    started = time.monotonic()
    count = deploy(api_url, fleet_file, echo=lambda _: None, at_once=at_once)
    return time.monotonic() - started, count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    directory = Path(tempfile.mkdtemp(prefix="ppo-dr-bench-deploy-"))
    directory.chmod(0o755)
    figures: dict[int, list[float]] = {1: [], APPLY_AT_ONCE: []}
    loads: list[float] = []
    try:
        make_fleet(directory, clients=3)  # the lab's generated fleet, nothing started
        fleet_file = directory / "fleet.yaml"
        plane = controlplane.up(directory / "cp")
        deploy(plane.api_url, fleet_file, echo=lambda _: None)  # pools, limits, automations
        count = 0
        for n in range(args.rounds):
            order = (1, APPLY_AT_ONCE)
            for at_once in order if n % 2 == 0 else order[::-1]:
                took, count = timed_deploy(plane.api_url, fleet_file, at_once)
                figures[at_once].append(took)
                loads.append(os.getloadavg()[0])
                print(f"round {n + 1}: {at_once} at once: {took:.1f} s (load {loads[-1]:.1f})")
        for at_once, times in figures.items():
            print(
                f"{count} deployments, {at_once} at once: median {statistics.median(times):.1f} s "
                f"({min(times):.1f}-{max(times):.1f}, n = {len(times)})"
            )
        one, many = statistics.median(figures[1]), statistics.median(figures[APPLY_AT_ONCE])
        print(f"ratio {one / many:.2f}x; load {min(loads):.1f}-{max(loads):.1f}")
        return 0
    finally:
        if (directory / "cp" / controlplane.STATE_FILE).exists():
            controlplane.down(directory / "cp", echo=lambda _: None)
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
