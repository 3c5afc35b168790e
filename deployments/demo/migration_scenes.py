"""The way back: the dead server repaired, the planned move home (the drain scene
starts it) checked against the workload log for lost acknowledged writes, the stop-gap
server released.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deployments.demo.narrator import get, total, workload_counts
from deployments.demo.session import FAILOVER_TIMEOUT_S, OutageDemo, ppo
from deployments.demo.waiting import wait_for
from ppo_dr.failover.steps import JOURNAL
from ppo_dr.fleet_access import client_path
from ppo_dr.inventory import Fleet, load_fleet
from ppo_dr.lab.workload import acked_seqs, lost_writes
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


def moved_back(demo: OutageDemo, start: Callable[[], object]) -> None:
    """Run *start* (it starts a planned move of every client from the stop-gap server to
    the repaired one), wait for the move, and check each client against the workload
    log: served by its old home again, 0 acknowledged writes lost."""
    acks = demo.lab.directory / "workload" / "acks.jsonl"
    fleet = load_fleet(demo.lab.fleet_file)
    lost_before = {
        c: set(journal_losses(demo, fleet, acks, c, demo.new_home)) for c in demo.clients
    }
    acked_before = {c: len(acked_seqs(acks, c)) for c in demo.clients}
    refused_before = workload_counts(demo.lab.directory)
    known = {r.plan_id for r in demo.store.failovers()}
    start()
    started = time.monotonic()

    def finished() -> Any:
        fresh = [r for r in demo.store.failovers() if r.plan_id not in known]
        return fresh[0] if fresh and fresh[0].finished_at is not None else None

    record = wait_for("the migration", finished, FAILOVER_TIMEOUT_S)
    print(
        f"migration {record.plan_id[:12]}: {record.state} after {time.monotonic() - started:.0f} s"
    )
    if record.state != "done":
        raise SystemExit(f"demo: the migration did not complete: {record.detail}")
    fleet = load_fleet(demo.lab.fleet_file)
    refused_after = workload_counts(demo.lab.directory)
    print(
        f"\n   {'client':22} {'served by':12} {'acked during':>12} {'refused (frozen)':>16} "
        f"{'lost by the move':>16}"
    )
    new_losses = 0
    for client_id in demo.clients:
        status, server = get(fleet.client(client_id).url.rstrip("/") + "/health")
        lost = (
            set(journal_losses(demo, fleet, acks, client_id, demo.victim)) - lost_before[client_id]
        )
        new_losses += len(lost)
        acked = len(acked_seqs(acks, client_id)) - acked_before[client_id]
        refused = total(refused_after, "failures", [client_id]) - total(
            refused_before, "failures", [client_id]
        )
        print(f"   {client_id:22} {server:12} {acked:>12} {refused:>16} {len(lost):>16}")
        if status != 200 or server != demo.victim:
            raise SystemExit(f"demo: {client_id} is not served by {demo.victim}: {status}")
    print(
        f"checked against the workload log: {new_losses} acknowledged write(s) lost by the "
        "migration (every write the app acknowledged is in the journal on "
        f"{demo.victim})"
    )
    if new_losses:
        raise SystemExit("demo: the planned migration lost acknowledged writes")
    runs = [r for r in demo.store.failovers() if r.plan_id == record.plan_id]
    if runs and runs[0].flow_run_id:
        demo.ui(
            f"Runs -> migrate-{record.plan_id[:12]} (the planned run; tag mode:planned)",
            demo.run_url(runs[0].flow_run_id),
        )


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
