"""``ppo-dr lab up --topology distributed``: the production shape in one machine.

In this order, each step on what the previous one made:

1. the lab fleet with each data centre in a network namespace of its own (as root;
   otherwise on 127.0.0.1, said so): ``Lab.up(topology="distributed")``;
2. the HA control plane (PostgreSQL, Redis, two API servers, services, HAProxy) in
   the control site's namespace, in ``DIR/control-plane``
   (:mod:`ppo_dr.lab.controlplane`);
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

from deployments.deploy import deploy
from deployments.workers import placed_workers, worker_command, worker_env
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import controlplane
from ppo_dr.lab.supervisor import Lab

Echo = Callable[[str], None]
CONTROL_PLANE_DIR = "control-plane"
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


def start_prefect(lab: Lab, *, timeout: float = 60.0, echo: Echo = print) -> DistributedLab:
    """Steps 2-4 (see the module docstring) beside *lab*, which ``lab.up(...,
    topology="distributed")`` started; on failure the whole lab goes down."""
    try:
        net = lab.network()
        cp_dir = control_plane_dir(lab.directory)
        cp_dir.mkdir(exist_ok=True)
        plane = controlplane.up(
            cp_dir,
            echo=echo,
            netns=net.control.namespace if net else None,
            netns_address=net.control.address if net else None,
        )
        deploy(plane.api_url, lab.fleet_file, echo=echo)
        names: list[str] = []
        for worker in placed_workers(load_fleet(lab.fleet_file)):
            home = lab.directory / "prefect" / worker.name
            home.mkdir(parents=True, exist_ok=True)
            env = worker_env(plane.inner_api_url, base={})
            env.update(
                PPO_DR_FLEET=str(lab.fleet_file),
                PPO_DR_HOME=str(lab.directory / "home"),
                PREFECT_HOME=str(home),
                PREFECT_WORKER_HEARTBEAT_SECONDS=WORKER_HEARTBEAT_S,
            )
            lab.start_program(
                worker.name,
                dc=worker.dc,
                argv=worker_command(worker.pool, worker.name),
                env=env,
                timeout=timeout,
            )
            names.append(worker.name)
            echo(f"worker {worker.name} started in {worker.dc}")
    except BaseException:
        down(lab.directory, echo=lambda _: None)
        raise
    return DistributedLab(lab, plane.api_url, plane.inner_api_url, names)


def down(lab_dir: Path, *, echo: Echo = print) -> list[str]:
    """Stop every lab process (the workers first, while the API still answers their
    goodbye), then the control plane, then the namespaces; what was stopped."""
    lab = Lab(lab_dir)
    stopped = lab.stop_processes()
    cp_dir = control_plane_dir(lab_dir)
    if (cp_dir / controlplane.STATE_FILE).exists():
        stopped += controlplane.down(cp_dir, echo=echo)
    return stopped + lab.down()
