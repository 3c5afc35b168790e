"""``make demo-distributed``: a whole data centre lost, on the production topology.

The namespaced lab (as root; on 127.0.0.1 otherwise, said so) with Prefect in its
production shape: an HA control plane off-site, one worker per DC pool, two
``control`` workers in cpt1 and lon1. Every app server is mirrored by its own DC's
worker; then jhb1 loses power whole (app servers, mirror, spare, its worker). The
control workers do the rest with nobody in jhb1: the probe declares ONE data-centre
incident, the escalation pages and (the policy's ``auto_failover``) starts the
failover, which plans under residency (ZA clients stay in ZA), restores from the
off-site mirror, switches routing; every client answers through the front door, and
the report says what was lost. The lab and everything it started go down at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from deployments import distributed_lab
from deployments.demo import dc_loss
from deployments.demo.failover_scenes import failover_rows, print_failover_table
from deployments.demo.narrator import next_step, number_steps_from, say
from deployments.demo.outage_scenes import level_one_paged, write_report
from deployments.demo.session import OutageDemo
from deployments.demo.waiting import WaitTimedOut
from deployments.workers import placed_workers
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import netns
from ppo_dr.lab.supervisor import Lab
from ppo_dr.store import Store

#: The lab's directory: the control plane's PostgreSQL (user postgres) must reach it.
DEFAULT_DIR = Path(tempfile.gettempdir()) / "ppo-dr-demo-distributed"
LOST_DC = "jhb1"


def _lab_dir() -> Path:
    directory = Path(os.environ.get("PPO_DR_DEMO_LAB", DEFAULT_DIR))
    if directory.exists():
        distributed_lab.down(directory, echo=lambda _: None)  # an interrupted run's leftovers
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    directory.chmod(0o755)
    return directory


def main() -> int:
    number_steps_from(1)
    started = time.monotonic()
    lab_dir = _lab_dir()
    why_not = netns.unavailable_reason()
    say(
        f"{next_step()}. The production shape in one machine",
        "each data centre in a network namespace of its own, the HA control plane\n"
        "(PostgreSQL, Redis, two API servers, HAProxy) in the control site's, a worker per\n"
        "DC pool and two control workers, in cpt1 and lon1"
        + (
            f"\n(no namespaces here: {why_not}; the same processes on 127.0.0.1)" if why_not else ""
        ),
    )
    lab = Lab(lab_dir)
    distributed_lab.lab_up(
        lab, echo=lambda line: print(f"   {line}"), clients=4, size_mb=8, fast=True, timeout=90.0
    )
    dc_loss.turn_on_auto_failover(lab)
    try:
        made = distributed_lab.start_prefect(lab, echo=lambda line: print(f"   {line}"))
        with Store.open(lab.store_url) as store:
            story(made, store)
    finally:
        say(f"{next_step()}. Tear everything down", "workers, control plane, servers, namespaces")
        stopped = distributed_lab.down(lab_dir, echo=lambda _: None)
        left = netns.existing(netns.prefix_for(lab_dir))
        print(f"stopped {len(stopped)} processes; namespaces left: {left or 'none'}")
    print(f"\nthe whole story took {time.monotonic() - started:.0f} s")
    return 0


def story(made: distributed_lab.DistributedLab, store: Store) -> None:
    lab = made.lab
    fleet = load_fleet(lab.fleet_file)
    victims = [p.client_id for p in store.placements() if fleet.server(p.server_id).dc == LOST_DC]
    demo = OutageDemo(lab, fleet, store, lab.directory / "home", LOST_DC, victims)
    demo.api_url = made.api_url
    print(f"   Prefect UI (through HAProxy): {demo.ui_url}")
    for worker in placed_workers(fleet):
        print(f"   worker {worker.name:14} pool {worker.pool:8} runs inside {worker.dc}")

    demo.step(
        "Every app server is mirrored by its own DC's worker",
        "mirror-server/mirror-<app> runs on pool dc-<its dc>: it reads the server over the\n"
        "DC's LAN and pushes to the on-site and off-site mirrors",
    )
    dc_loss.mirror_every_app_server(made.api_url, fleet, say=print)
    probe = dc_loss.wait_for_probe(made.api_url)
    print(f"   the probe ({probe.name}) runs on {probe.labels[dc_loss.WORKER_LABEL]}, off-site")

    demo.step(
        f"{LOST_DC} loses power whole",
        f"every process in {LOST_DC}'s namespace is killed: its app servers, mirror, spare\n"
        f"and the worker of pool dc-{LOST_DC}; these clients go dark: {', '.join(victims)}",
    )
    lab.break_(LOST_DC, "power")
    demo.fault_at = datetime.now(UTC)
    net = lab.network()
    if net is not None:
        namespace = net.dc(LOST_DC).namespace
        print(f"   processes left in {namespace}: {netns.pids_in(namespace) or 'none'}")

    demo.step(
        "The control workers declare ONE data-centre incident",
        "the probe on a control worker sees both app servers and their clients fail; the\n"
        "inhibition makes it one incident for the DC, not one per server or client",
    )
    demo.incident = dc_loss.wait_for_dc_incident(store, LOST_DC)
    waited = (demo.incident.opened_at - demo.fault_at).total_seconds()
    print(f"   incident #{demo.incident.id}: {demo.incident.title} ({waited:.0f} s after the cut)")
    level_one_paged(demo)

    demo.step(
        "The failover plans under residency and restores from the off-site mirror",
        "the policy has auto_failover on: the escalation starts it, no approval waited for;\n"
        "ZA clients may only go to ZA, so cpt1; the data comes from mirror-cpt1-1",
    )
    run = dc_loss.failover_run(made.api_url, demo.incident.id)
    print(f"   failover run {run.name}: {run.state.name} on {run.labels.get(dc_loss.WORKER_LABEL)}")
    if not run.state.is_completed():
        raise dc_loss.StoryFailed(f"the failover ended {run.state.name}: {run.state.message}")
    demo.plan_id = next(t for t in run.tags if t.startswith("plan:")).removeprefix("plan:")
    dc_loss.count_lost_writes(lab, demo.plan_id)  # the lab's measure, not the runbook's
    rows = failover_rows(demo)
    print_failover_table(rows)

    demo.step(
        "Routing switched: every client answers through the front door",
        "asked from the wan (the internet of the lab); X-PPO-Server names the new home",
    )
    fleet = load_fleet(lab.fleet_file)
    for row in rows:
        status, server = dc_loss.answer_through_front_door(lab, fleet, row.client_id)
        dc = fleet.server(row.to_server).dc
        print(f"   {row.client_id:22} {status} from {server} ({dc}, {fleet.dc(dc).country})")

    demo.step(
        f"Nobody runs {LOST_DC}'s mirrors: said once, paging nobody",
        "the probe reads the work pools from the API every minute; a pool without an online\n"
        "worker past the outage threshold gets a non-paging incident naming it",
    )
    pool = dc_loss.wait_for_unattended_pool(store)
    print(f"   incident #{pool.id} (not paging): {pool.title}")

    write_report(demo)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (WaitTimedOut, dc_loss.StoryFailed) as exc:
        sys.exit(f"demo: {exc}")
