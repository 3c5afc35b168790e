"""Benchmark: what data centres as network namespaces cost the lab (as root).

For each round, in turn: the namespaces alone (made, then deleted), a loopback lab
and a namespaced lab (``topology="distributed"``, without Prefect) brought up and
down, and in the namespaced one a DC's network fault and power loss with their
heals. Medians with min and max; the loopback lab is measured in the same run as
its peer, since this machine is shared and noisy.

    .venv/bin/python bench/lab_topologies.py [--rounds 3] [--clients 3]

Not run by CI. About 40 s a round on a quiet 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from ppo_dr.lab import netns
from ppo_dr.lab.supervisor import Lab, Topology
from ppo_dr.lab.topology import DATA_CENTRES


def timed(figures: dict[str, list[float]], name: str, action: Callable[[], object]) -> None:
    """Run *action* and add its wall time to *figures* under *name*."""
    started = time.monotonic()
    try:
        action()
    finally:
        figures.setdefault(name, []).append(time.monotonic() - started)


def namespaces_round(base: Path, figures: dict[str, list[float]]) -> None:
    plan = netns.plan_for(base, [dc.id for dc in DATA_CENTRES])
    timed(figures, "namespaces: create", lambda: netns.create(plan))
    timed(figures, "namespaces: destroy", lambda: netns.destroy(plan.prefix))


def lab_round(
    base: Path, topology: Topology, clients: int, figures: dict[str, list[float]]
) -> None:
    lab = Lab(base / topology)
    try:
        timed(
            figures,
            f"{topology}: up",
            lambda: lab.up(clients=clients, size_mb=2, fast=True, timeout=120, topology=topology),
        )
        if topology == "distributed":
            timed(figures, "break jhb1 --fault network", lambda: lab.break_("jhb1", "network"))
            timed(figures, "heal jhb1 (link up)", lambda: lab.heal("jhb1"))
            timed(figures, "break jhb1 --fault power", lambda: lab.break_("jhb1", "power"))
            timed(figures, "heal jhb1 (servers restarted)", lambda: lab.heal("jhb1", timeout=60))
    finally:
        timed(figures, f"{topology}: down", lab.down)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--clients", type=int, default=3)
    args = parser.parse_args()
    if (reason := netns.unavailable_reason()) is not None:
        print(f"needs network namespaces: {reason}", file=sys.stderr)
        return 2
    figures: dict[str, list[float]] = {}
    for _round in range(args.rounds):
        with tempfile.TemporaryDirectory(prefix="ppo-bench-netns-") as tmp:
            namespaces_round(Path(tmp), figures)
            lab_round(Path(tmp), "loopback", args.clients, figures)
            lab_round(Path(tmp), "distributed", args.clients, figures)
    width = max(map(len, figures))
    for name, values in figures.items():
        print(
            f"{name:<{width}}  median {statistics.median(values):6.2f} s"
            f"  (min {min(values):.2f}, max {max(values):.2f}, n={len(values)})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
