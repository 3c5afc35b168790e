"""The way back: the dead server repaired, the stop-gap server released once the drain
scene has moved every client home; what a client's journal on a server lacks of its
acknowledged writes.
"""

from __future__ import annotations

import time
from pathlib import Path

from deployments.demo.narrator import get
from deployments.demo.session import OutageDemo, ppo
from deployments.demo.waiting import wait_for
from ppo_dr.failover.steps import JOURNAL
from ppo_dr.fleet_access import client_path
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.workload import lost_writes
from ppo_dr.providers.lab import LabProvider


def heal_for_migration(demo: OutageDemo) -> None:
    demo.step(
        f"{demo.victim} is repaired (power restored, same disk)",
        f"the operator's choice: move the clients back to {demo.victim} rather than keep them\n"
        "on the stop-gap server. Johannesburg is where they were placed (near their users,\n"
        "next to their on-site mirror), and the stop-gap server can then be released",
    )
    started = time.monotonic()
    demo.lab.heal(demo.victim)
    url = f"http://127.0.0.1:{demo.fleet.server(demo.victim).http.port}/health"  # type: ignore[union-attr]
    wait_for(f"{demo.victim} answering", lambda: get(url)[0] == 200, 30, every=0.25)
    took = time.monotonic() - started
    print(f"{demo.victim} answers again after {took:.1f} s; it serves no client yet")
    ppo(demo, "maintenance", "end", demo.window_id)


def journal_losses(
    demo: OutageDemo, fleet: Fleet, acks: Path, client_id: str, server_id: str
) -> list[int]:
    """The client's acknowledged writes missing from its journal on *server_id*'s disk."""
    path = client_path(fleet, client_id, server_id=server_id).lstrip("/")
    journal = demo.lab.server_dir(server_id) / "fs" / path / JOURNAL
    return lost_writes(acks, client_id, journal.read_bytes().splitlines())


def release_temporary_server(demo: OutageDemo) -> None:
    demo.step(
        f"Release {demo.new_home}: no client lives there any more",
        "the lab provider stops it and forgets it (front door route, known_hosts, fleet.yaml)",
    )
    dc = load_fleet(demo.lab.fleet_file).server(demo.new_home).dc
    LabProvider(dc, lab_dir=demo.lab.directory).release(demo.new_home)
    left = [s.id for s in load_fleet(demo.lab.fleet_file).servers if s.id == demo.new_home]
    print(f"{demo.new_home} {'STILL LISTED' if left else 'released'}")
