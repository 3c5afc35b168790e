"""The fleet a chaos run breaks: the protocol a lab implements, and the two labs'.

:class:`ChaosFleet` is all the runner needs from a lab: where its records are (fleet
file and the store it names, workload log, outbox, the runbooks' logs), the lab's own
fault commands, which deployment mirrors a server, and which database cluster holds
the store. Two labs implement it, both over :class:`ppo_dr.lab.supervisor.Lab` (whose
faults reach namespaces where the lab has them):

- :class:`LoopbackFleet`: the runbooks run in ``ppo-dr serve`` beside the lab (the
  chaos command starts it); one ``mirror-fleet`` deployment mirrors every server; the
  store is a SQLite file or the lab's own PostgreSQL (``--store postgres``);
- :class:`DistributedFleet`: ``lab up --topology distributed``. The runbooks run on the
  lab's own workers against its HA control plane; each app server has its own mirror
  deployment on its DC's pool; the store is a database of the control plane's
  PostgreSQL, so ``store-restart`` restarts that cluster (Prefect's database with it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, TypeVar

from ppo_dr.errors import LabError
from ppo_dr.inventory import load_fleet
from ppo_dr.lab import netns, store_database
from ppo_dr.lab.controlplane_record import LAB_SUBDIR, STATE_FILE, load
from ppo_dr.lab.supervisor import Lab

#: The loopback lab's mirror deployment: every app server's mirror in one run.
FLEET_MIRROR = "mirror-fleet/mirror-fleet"
T = TypeVar("T")


class ChaosFleet(Protocol):
    """A running lab, as the chaos runner sees it."""

    @property
    def fleet_file(self) -> Path: ...

    @property
    def acks_file(self) -> Path:
        """The workload's log of acknowledged writes (JSON lines)."""
        ...

    def outbox(self) -> Path:
        """The file the lab's channels write every message to (JSON lines)."""
        ...

    def break_(self, target: str, fault: str) -> list[str]:
        """Inject the lab's *fault* (power, hang, disk, network) into *target*."""
        ...

    def heal(self, target: str) -> list[str]:
        """Undo every fault on *target*; wait until it answers again."""
        ...

    def unhealthy(self) -> list[str]:
        """Components that do not answer through the network now ([] when healthy)."""
        ...

    @property
    def front_door_host(self) -> str:
        """The address the lab's front door (and every client URL) is on."""
        ...

    def reach_front_door(self, work: Callable[[], T]) -> T:
        """*work* run where the front door answers (its sockets opened there)."""
        ...

    def public_argv(self, argv: list[str]) -> list[str]:
        """*argv* run where the lab's public addresses are (a stand-in for the internet's
        APIs listens there on :attr:`front_door_host`)."""
        ...

    def mirror_deployment(self, server_id: str) -> str:
        """The deployment (``flow/deployment``) whose run mirrors app server *server_id*."""
        ...

    def mirror_deployments(self) -> list[str]:
        """Every mirror deployment of the fleet (one run of each mirrors every server)."""
        ...

    def store_cluster(self) -> Path | None:
        """The control-plane record directory whose ``postgres`` holds the store (what
        ``store-restart`` restarts); None for a store without a cluster of the lab's."""
        ...

    def run_logs(self) -> list[Path]:
        """The logs the runbooks' output goes to (the store errors they met are there)."""
        ...


class LoopbackFleet:
    """The embedded lab on 127.0.0.1 (``ppo-dr lab up``) as a :class:`ChaosFleet`."""

    def __init__(self, directory: Path) -> None:
        self.lab = Lab(directory)
        self.lab._require_running()  # a clear error for a lab that is not up

    @property
    def fleet_file(self) -> Path:
        return self.lab.fleet_file

    @property
    def acks_file(self) -> Path:
        return self.lab.directory / "workload" / "acks.jsonl"

    def outbox(self) -> Path:
        fleet = load_fleet(self.fleet_file)
        return Path(fleet.channels.outbox or self.lab.directory / "outbox.jsonl")

    def break_(self, target: str, fault: str) -> list[str]:
        return self.lab.break_(target, fault)

    def heal(self, target: str) -> list[str]:
        return self.lab.heal(target, timeout=60.0)

    def unhealthy(self) -> list[str]:
        return [row.name for row in self.lab.status() if not row.healthy]

    @property
    def front_door_host(self) -> str:
        return self.lab.public_host()

    def reach_front_door(self, work: Callable[[], T]) -> T:
        """Here on 127.0.0.1; from inside the ``wan`` namespace of a namespaced lab."""
        net = self.lab.network()
        return netns.call_in(net.wan if net else None, work)

    def public_argv(self, argv: list[str]) -> list[str]:
        net = self.lab.network()
        return [*netns.exec_prefix(net.wan if net else None), *argv]

    def mirror_deployment(self, server_id: str) -> str:
        return FLEET_MIRROR

    def mirror_deployments(self) -> list[str]:
        return [FLEET_MIRROR]

    def store_cluster(self) -> Path | None:
        directory = self.lab.directory
        return (
            store_database.store_db_dir(directory) if store_database.recorded(directory) else None
        )

    def run_logs(self) -> list[Path]:
        """``ppo-dr serve``'s log, where the chaos command writes it."""
        return [self.lab.directory / "logs" / "chaos-serve.log"]

    def faults_in_force(self) -> dict[str, list[str]]:
        """Server -> faults recorded in lab.json (a chaos run starts with none)."""
        state = json.loads(self.lab.state_file.read_text(encoding="utf-8"))
        return {s: sorted(f) for s, f in (state.get("faults") or {}).items() if f}


def control_plane_of(directory: Path) -> Path | None:
    """The control plane's record directory of the distributed lab in *directory*;
    None for a lab without one (the loopback lab)."""
    path = Path(directory).expanduser().resolve() / LAB_SUBDIR
    return path if (path / STATE_FILE).exists() else None


class DistributedFleet(LoopbackFleet):
    """``lab up --topology distributed`` as a :class:`ChaosFleet`: the same lab faults
    (a whole DC's ``network`` is its namespace's link down), its own workers running
    the runbooks, its control plane holding the store and the Prefect API."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        plane = control_plane_of(self.lab.directory)
        if plane is None:
            raise LabError(
                f"{self.lab.directory} is not a distributed lab: it has no control plane"
            )
        self.control_plane = plane

    @property
    def api_url(self) -> str:
        """The Prefect API as the host sees it (HAProxy in front of both servers)."""
        return load(self.control_plane).api_url

    def mirror_deployment(self, server_id: str) -> str:
        return f"mirror-server/mirror-{server_id}"

    def mirror_deployments(self) -> list[str]:
        fleet = load_fleet(self.fleet_file)
        apps = sorted(s.id for s in fleet.servers if s.role == "app")
        return [self.mirror_deployment(server_id) for server_id in apps]

    def store_cluster(self) -> Path | None:
        return self.control_plane

    def run_logs(self) -> list[Path]:
        """Each worker's log: a process worker writes its flow runs' output there."""
        state = json.loads(self.lab.state_file.read_text(encoding="utf-8"))
        workers = sorted(n for n, c in state["components"].items() if c["kind"] == "worker")
        return [self.lab.directory / "logs" / f"{name}.log" for name in workers]


def open_fleet(directory: Path) -> LoopbackFleet:
    """The running lab in *directory* as the chaos fleet its topology calls for."""
    if control_plane_of(directory) is not None:
        return DistributedFleet(directory)
    return LoopbackFleet(directory)
