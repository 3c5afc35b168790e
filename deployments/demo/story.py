"""The whole demo in order: the lab scenes, then the outage story (:data:`OUTAGE_STEPS`),
and the lab always taken down at the end.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from deployments.demo.drain_scene import drain_back
from deployments.demo.failover_scenes import (
    approve_failover,
    clients_healthy,
    failover_done,
    mirror_new_home,
    start_failover,
)
from deployments.demo.lab_scenes import walk_through
from deployments.demo.migration_scenes import (
    heal_for_migration,
    release_temporary_server,
)
from deployments.demo.narrator import next_step, say
from deployments.demo.outage_scenes import (
    emails_clients,
    escalates,
    level_one_paged,
    operator_resolves,
    posts_to_x,
    power_kill,
    probe_declares,
    resolved_notices,
    set_scene,
    write_report,
)
from deployments.demo.session import OutageDemo, start_serve, stop_serve
from deployments.demo.upgrade_scene import upgrade_and_refill
from ppo_dr import config
from ppo_dr.inventory import load_fleet
from ppo_dr.lab.supervisor import Lab
from ppo_dr.mirror.runbook import store_url
from ppo_dr.store import Store


def main() -> int:
    lab_dir = Path(os.environ.get("PPO_DR_DEMO_LAB", config.home() / "demo-lab"))
    lab = Lab(lab_dir)
    lab.down()  # a demo interrupted earlier must not leave its processes running
    if lab_dir.exists():
        shutil.rmtree(lab_dir)

    say(
        "1. Bring up the lab fleet",
        f"3 data centres (jhb1, cpt1 in ZA; lon1 in GB), app, mirror and spare servers,\n"
        f"each an SSH/SFTP server process on 127.0.0.1; a front door; a workload writer.\n"
        f"Directory: {lab_dir}",
    )
    started = time.monotonic()
    lab.up(clients=20, size_mb=200, fast=True)
    print(f"healthy after {time.monotonic() - started:.1f} s")
    try:
        mirrored = walk_through(lab, lab_dir)
        return outage_walk_through(lab, lab_dir) or mirrored
    finally:
        say(f"{next_step()}. Tear the lab down", "every process it started is stopped, by pid")
        stopped = lab.down()
        print(f"stopped {len(stopped)} processes; nothing of the lab is running")


#: The outage story, in order. A step is a function of the shared :class:`OutageDemo`.
OUTAGE_STEPS: list[Callable[[OutageDemo], None]] = [
    start_serve,
    set_scene,
    power_kill,
    probe_declares,
    level_one_paged,
    escalates,
    start_failover,
    approve_failover,
    posts_to_x,
    emails_clients,
    failover_done,
    clients_healthy,
    mirror_new_home,
    operator_resolves,
    resolved_notices,
    write_report,
    heal_for_migration,
    drain_back,
    release_temporary_server,
    upgrade_and_refill,
]


def outage_walk_through(lab: Lab, lab_dir: Path) -> int:
    """The outage story (:data:`OUTAGE_STEPS`); serve is always stopped at the end."""
    fleet = load_fleet(lab.fleet_file)
    victim = fleet.servers_by_role("app")[0].id
    with Store.open(store_url(fleet)) as store:
        demo = OutageDemo(
            lab, fleet, store, lab_dir / "serve", victim, [c.id for c in fleet.clients_on(victim)]
        )
        try:
            for run_step in OUTAGE_STEPS:
                run_step(demo)
        finally:
            lab.heal(victim)
            demo.step("Stop ppo-dr serve", "Ctrl-C: it pauses the deployments, stops its server")
            stop_serve(demo)
    return 0
