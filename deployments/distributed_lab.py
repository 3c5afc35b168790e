"""``ppo-dr lab up --topology distributed``: the production shape in one machine.

In this order, each step on what the previous one made (:func:`lab_up` does 1-2,
:func:`start_prefect` 3-4):

1. each data centre in a network namespace of its own (as root; otherwise on
   127.0.0.1, said so), then the HA control plane (PostgreSQL, Redis, two API
   servers, services, HAProxy) in the control site's namespace, in
   ``DIR/control-plane`` (:mod:`ppo_dr.lab.controlplane`);
2. the lab fleet, its state store in PostgreSQL's ``store`` database (reachable from
   every DC, the wan and the host: :mod:`ppo_dr.lab.store_network`):
   ``Lab.up(topology="distributed", store=...)``;
3. ``deploy`` of every pool, limit, deployment and automation against it;
4. one worker per DC pool inside its DC, and two ``control`` workers in two other
   DCs (:func:`deployments.workers.placed_workers`), each a component of its DC, so
   ``lab break DC --fault power`` kills it and ``lab heal DC`` starts it again.

Any failure takes down what was started, namespaces included. ``down`` stops the
control plane, then the lab (workers, servers, namespaces).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deployments.deploy import deploy
from deployments.workers import placed_workers, worker_command, worker_env
from ppo_dr.errors import LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane, controlplane_record, netns
from ppo_dr.lab.chaos.channel_errors import CREDENTIAL_ENV, CREDENTIAL_VALUE
from ppo_dr.lab.store_network import StoreUrls, store_urls
from ppo_dr.lab.supervisor import Lab

Echo = Callable[[str], None]
CONTROL_PLANE_DIR = controlplane_record.LAB_SUBDIR
#: Workers beat every 10 s, so the server sees a lost DC's worker offline sooner
#: than with the engine's 30 s default (offline after 3 missed beats).
WORKER_HEARTBEAT_S = "10"


@dataclass(frozen=True)
class DistributedLab:
    """What came up: the lab, the API (as the host sees it) and the workers' names
    (each is also the worker's lab component)."""

    lab: Lab
    api_url: str
    inner_api_url: str
    workers: list[str]


def control_plane_dir(lab_dir: Path) -> Path:
    return Path(lab_dir).expanduser().resolve() / CONTROL_PLANE_DIR


def lab_up(lab: Lab, *, echo: Echo = print, **options: Any) -> None:
    """Steps 1-2: ``lab.up(topology="distributed", **options)`` with the control plane
    started as soon as the namespaces exist, so the store is in its PostgreSQL from
    the first placement on; on failure everything goes down, control plane included."""

    def start_store(net: netns.NetPlan | None) -> StoreUrls:
        plane = _start_control_plane(lab, net, echo)
        return store_urls(plane)

    try:
        lab.up(topology="distributed", store=start_store, progress=echo, **options)
    except BaseException:
        down(lab.directory, echo=lambda _: None)
        raise


def _start_control_plane(
    lab: Lab, net: netns.NetPlan | None, echo: Echo
) -> controlplane.ControlPlane:
    cp_dir = control_plane_dir(lab.directory)
    cp_dir.mkdir(exist_ok=True)
    return controlplane.up(
        cp_dir,
        echo=echo,
        netns=net.control.namespace if net else None,
        netns_address=net.control.address if net else None,
    )


def start_prefect(lab: Lab, *, timeout: float = 60.0, echo: Echo = print) -> DistributedLab:
    """Steps 3-4 (see the module docstring) beside *lab*, which :func:`lab_up` started
    (a lab from plain ``lab.up(topology="distributed")`` gets its control plane here,
    its store stays SQLite); on failure the whole lab goes down."""
    try:
        cp_dir = control_plane_dir(lab.directory)
        if (cp_dir / controlplane.STATE_FILE).exists():
            plane = controlplane.load(cp_dir)
        else:
            plane = _start_control_plane(lab, lab.network(), echo)
        if plane.state != "up":
            raise LabError(f"the control plane in {cp_dir} is {plane.state}, not up")
        deploy(plane.api_url, lab.fleet_file, echo=echo)
        names: list[str] = []
        for worker in placed_workers(load_fleet(lab.fleet_file)):
            start_lab_worker(lab, plane, worker.pool, worker.name, worker.dc, timeout=timeout)
            names.append(worker.name)
            echo(f"worker {worker.name} started in {worker.dc}")
    except BaseException:
        down(lab.directory, echo=lambda _: None)
        raise
    return DistributedLab(lab, plane.api_url, plane.inner_api_url, names)


def start_lab_worker(
    lab: Lab, plane: controlplane.ControlPlane, pool: str, name: str, dc: str, *, timeout: float
) -> None:
    """A worker of *pool* named *name* as a component of data centre *dc* (inside its
    namespace, so a power cut of *dc* kills it), with the lab's fleet, store and home."""
    home = lab.directory / "prefect" / name
    home.mkdir(parents=True, exist_ok=True)
    env = worker_env(plane.inner_api_url, base={})
    env.update(
        {CREDENTIAL_ENV: CREDENTIAL_VALUE},  # the lab's stand-in APIs (chaos) take any key
        PPO_DR_FLEET=str(lab.fleet_file),
        PPO_DR_HOME=str(lab.directory / "home"),
        PPO_DR_DB_URL=lab.inner_store_url,
        PREFECT_HOME=str(home),
        PREFECT_WORKER_HEARTBEAT_SECONDS=WORKER_HEARTBEAT_S,
    )
    lab.start_program(name, dc=dc, argv=worker_command(pool, name), env=env, timeout=timeout)


def down(lab_dir: Path, *, echo: Echo = print) -> list[str]:
    """Stop every lab process (the workers first, while the API still answers their
    goodbye), then the control plane, then the namespaces; what was stopped."""
    lab = Lab(lab_dir)
    stopped = lab.stop_processes()
    cp_dir = control_plane_dir(lab_dir)
    if (cp_dir / controlplane.STATE_FILE).exists():
        stopped += controlplane.down(cp_dir, echo=echo)
    return stopped + lab.down()
