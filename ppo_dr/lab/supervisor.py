"""The lab supervisor: brings the embedded fleet up, breaks it, heals it, takes it down.

:class:`Lab` owns one lab directory (layout in ``docs/lab.md``) and is the one entry:
``up`` and ``down`` are here; the rest is split by what it does:

    labdir.py        paths, lab.json, the directory lock, net/cut.json
    processes.py     spawn, which pids are ours, stop (LabProcesses)
    status.py        probes through public ports, health waits, status (LabStatus)
    faults.py        break and heal: power, hang, disk, network (LabFaults)
    configs.py       fleet.yaml, server.json, routes.json, component records (LabConfigs)
    provisioning.py  servers added and released at run time (LabProvisioning)

With ``topology="distributed"`` and root, each data centre lives in a network
namespace of its own (``netns.py``; without root it falls back to the loopback lab
and says so), and :meth:`Lab.start_program` runs a program (a Prefect worker) inside
a DC's namespace, so that a DC's power loss takes its workers too.

Every process it starts is recorded in ``lab.json`` the moment it is spawned, so
nothing it started can be forgotten, not even if ``lab up`` itself is killed with
``kill -9``: ``down`` stops every recorded pid that is still ours (checked against
``/proc/<pid>/cmdline``, so a recycled pid is never hit) and then sweeps ``/proc`` for
any lab process of this directory that was spawned but not yet recorded.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, get_args

from ppo_dr.errors import LabError
from ppo_dr.lab import netns, store_database
from ppo_dr.lab import seed as lab_seed
from ppo_dr.lab import topology as lab_topology
from ppo_dr.lab.configs import Progress
from ppo_dr.lab.faults import LabFaults
from ppo_dr.lab.labdir import LAB_FILE, LOCK_FILE, now_text
from ppo_dr.lab.processes import is_ours, lab_processes
from ppo_dr.lab.provisioning import LabProvisioning
from ppo_dr.lab.status import ComponentStatus
from ppo_dr.lab.store_network import StoreUrls

__all__ = ["ComponentStatus", "Lab", "Topology"]

#: ``loopback``: everything on 127.0.0.1; ``distributed``: a namespace per DC (root).
Topology = Literal["loopback", "distributed"]
TOPOLOGIES: tuple[str, ...] = get_args(Topology)
#: Starts the store's database for a lab (given its namespaces) and says where it is.
StoreDatabase = Callable[[netns.NetPlan | None], StoreUrls]


class Lab(LabProvisioning, LabFaults):
    """The embedded lab fleet in one directory (see ``docs/lab.md``)."""

    # ---- up

    def up(
        self,
        *,
        clients: int = 20,
        size_mb: int = 200,
        fast: bool = False,
        seed: int = 1,
        timeout: float = 15.0,
        progress: Progress | None = None,
        topology: Topology = "loopback",
        store: StoreDatabase | None = None,
        app_servers: int = lab_topology.DEFAULT_APP_SERVERS,
    ) -> None:
        """Generate the fleet, start every component and wait until all are healthy.

        *app_servers* sets the fleet's size (``--scale``; four is the classic lab).
        *store*, when given, starts the state store's database once the namespaces
        exist and says where it is (the distributed lab's PostgreSQL); without it the
        store is a SQLite file in the lab. *timeout* bounds the whole start except
        the time spent writing client data (disk-bound; it overlaps the processes'
        start-up) and starting the store's database. On any failure everything
        started is stopped again (namespaces too) and :class:`LabError` says which
        component failed, with the end of its log.
        """
        say = progress or (lambda _message: None)
        started = time.monotonic()
        if clients < 1:
            raise LabError(f"a lab needs at least one client (got {clients})")
        lab_topology.plan_servers(app_servers)  # refuses a size out of bounds, early
        if size_mb < 0:
            raise LabError(f"--size must not be negative (got {size_mb})")
        if topology not in TOPOLOGIES:
            raise LabError(f"unknown topology {topology!r}: one of {', '.join(TOPOLOGIES)}")
        self._refuse_foreign_directory()
        with self._locked(create=True):
            self._prepare_directory()
            say(
                f"lab {self.directory}: starting {clients} clients, {size_mb} MiB of data"
                f"{', fast timings' if fast else ''}"
            )
            state: dict[str, Any] | None = None
            net: netns.NetPlan | None = None
            try:
                net = self._make_namespaces(topology, say)
                t = time.monotonic()
                urls = store(net) if store is not None else None
                deadline = started + timeout + (time.monotonic() - t)
                state = self._generate(
                    clients=clients,
                    size_mb=size_mb,
                    fast=fast,
                    seed=seed,
                    say=say,
                    net=net,
                    store=urls,
                    app_servers=app_servers,
                )
                self._start(state, size_mb=size_mb, seed=seed, deadline=deadline, say=say)
            except BaseException as exc:
                stopped = self._stop_everything(state)
                if net is not None:
                    netns.destroy(net.prefix)
                if state is not None:
                    state["state"] = "failed"
                    state["error"] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    self._save(state)
                if stopped:
                    say(f"stopped what had started: {', '.join(stopped)}")
                if isinstance(exc, LabError):
                    raise
                if isinstance(exc, Exception):
                    raise LabError(f"lab up failed: {type(exc).__name__}: {exc}") from exc
                raise
            state["state"] = "running"
            state["healthy_after_s"] = round(time.monotonic() - started, 2)
            self._save(state)
        say(f"healthy after {state['healthy_after_s']:.1f} s")

    def _make_namespaces(self, topology: Topology, say: Progress) -> netns.NetPlan | None:
        """The DCs' namespaces for a distributed lab, when this machine allows them."""
        if topology != "distributed":
            return None
        reason = netns.unavailable_reason()
        if reason is not None:
            say(f"no network namespaces ({reason}): the distributed lab runs on 127.0.0.1")
            return None
        net = netns.plan_for(self.directory, [dc.id for dc in lab_topology.DATA_CENTRES])
        netns.destroy(net.prefix)  # remains of a crashed lab here (none normally)
        netns.create(net)
        say(
            f"network namespaces {', '.join(net.namespaces)}: bridge {net.wan_address}/16, "
            + ", ".join(f"{m.key} {m.address}" for m in net.members)
        )
        return net

    def _refuse_foreign_directory(self) -> None:
        """A non-empty directory that holds no lab is someone else's: leave it alone."""
        if not self.directory.is_dir() or self.state_file.exists():
            return
        if any(p.name != LOCK_FILE for p in self.directory.iterdir()):
            raise LabError(
                f"{self.directory} is not empty and holds no lab ({LAB_FILE} missing); "
                "pick an empty or new directory"
            )

    def _prepare_directory(self) -> None:
        """Refuse a running lab or a foreign directory; clear the remains of an old lab."""
        self._refuse_foreign_directory()  # again, under the lock
        state = self._load() if self.state_file.exists() else None
        if state is not None:
            live = [
                name
                for name, comp in state["components"].items()
                if is_ours(comp.get("pid"), comp["module"], self.directory)
            ]
            if live:
                raise LabError(
                    f"the lab in {self.directory} is already up ({len(live)} processes running; "
                    "see `ppo-dr lab status`, or `ppo-dr lab down` first)"
                )
        if self.directory.exists():
            entries = [p for p in self.directory.iterdir() if p.name != LOCK_FILE]
            self._stop_everything(state)  # strays of a crashed `up` (none normally)
            for entry in entries:
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry)
                else:
                    entry.unlink()
        self.directory.mkdir(parents=True, exist_ok=True)
        # Mark the directory as a lab's at once: a crash from here on leaves a lab
        # directory that `down` and the next `up` recognise.
        self._save(
            {"version": 1, "lab_dir": str(self.directory), "state": "starting", "components": {}}
        )

    def _start(
        self, state: dict[str, Any], *, size_mb: int, seed: int, deadline: float, say: Progress
    ) -> None:
        """Placements, then netsim, servers and front door at once; data while they import.

        The workload starts last, once its clients' data exists. Seeding runs on a few
        threads so that its disk waits overlap the processes' start-up work.
        """
        from ppo_dr.inventory import load_fleet
        from ppo_dr.store import Store

        fleet = load_fleet(self.fleet_file)
        store = Store(self.store_url)
        try:
            store.upgrade()
            placed = store.seed_placements({c.id: c.server for c in fleet.clients})
        finally:
            store.close()
        say(f"state store ready: {placed} client placements")

        comps = state["components"]
        for name in comps:
            if name != "workload":
                self._spawn(state, name)
        servers = sum(1 for c in comps.values() if c["kind"] == "server")
        say(f"started netsim, {servers} servers and the front door")

        t = time.monotonic()
        per_client = size_mb * lab_seed.MIB // max(len(fleet.clients), 1)

        def seed_one(client_id: str) -> lab_seed.SeedStats:
            client = fleet.client(client_id)
            home = fleet.server(client.server)
            directory = self.data_root(home.id, home.data_root) / client.data_path
            return lab_seed.seed_client(directory, client.id, per_client, seed=seed)

        with ThreadPoolExecutor(max_workers=4) as pool:
            stats = list(pool.map(seed_one, [c.id for c in fleet.clients]))
        # Writing the data is bound by a disk we share; the timeout is for the processes.
        deadline += time.monotonic() - t
        say(
            f"seeded {len(stats)} clients: {sum(s.bytes for s in stats) / lab_seed.MIB:.0f} MiB "
            f"in {sum(s.files for s in stats)} files ({time.monotonic() - t:.1f} s)"
        )
        self._spawn(state, "workload")
        say("started the workload writer")
        self._wait_healthy(state, list(comps), deadline)

    # ---- down

    def down(self) -> list[str]:
        """Stop every process of this lab and delete its namespaces; keep its files.

        Safe to repeat. The namespaces are found by the lab's prefix, so even a lab
        whose ``lab.json`` is lost leaves none behind. The store's own PostgreSQL
        (``--store postgres``) stops after the processes that use it.
        """
        stopped = self.stop_processes()
        stopped += store_database.stop(self.directory)
        if self.directory.exists() and netns.unavailable_reason() is None:
            prefix = netns.prefix_for(self.directory)
            stopped += [f"netns {name}" for name in netns.destroy(prefix)]
        return stopped

    def stop_processes(self) -> list[str]:
        """Stop every process of this lab (namespaces stay); keep its files."""
        if not self.directory.exists():
            return []
        with self._locked(timeout=5.0, required=False):
            try:
                state = self._load()
            except LabError:  # unreadable lab.json: the /proc sweep still finds everything
                state = None
            stopped = self._stop_everything(state)
            if state is not None:
                state["state"] = "stopped"
                state["stopped_at"] = now_text()
                self._save(state)
        return stopped

    # ---- programs: workers inside a data centre

    def start_program(
        self,
        name: str,
        *,
        dc: str,
        argv: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 15.0,
    ) -> int:
        """Run *argv* as component *name* of data centre *dc* (in its namespace, when
        the lab has namespaces); its pid, once it has run for a moment.

        It is part of the DC from then on: a power loss of the DC kills it and heal
        starts it again; ``down`` stops it. *env* is added to the lab's environment.
        """
        with self._locked():
            state = self._require_running()
            comps = state["components"]
            dcs = sorted({c["dc"] for c in comps.values() if c["kind"] == "server"})
            if dc not in dcs:
                raise LabError(f"unknown data centre {dc!r}: one of {', '.join(dcs)}")
            if name in comps:
                raise LabError(f"a lab component called {name!r} exists already")
            if not argv:
                raise LabError(f"{name}: no command to run")
            net = self._net(state)
            comps[name] = {
                "kind": "worker",
                "module": "program",
                "dc": dc,
                "role": "worker",
                "argv": list(argv),
                "env": dict(env or {}),
                "netns": net.dc(dc).namespace if net else None,
                "pid": None,
            }
            pid = self._spawn(state, name)
            # Alive a moment later: a bad command line exits at once, with its log.
            time.sleep(0.5)
            self._wait_healthy(state, [name], time.monotonic() + timeout)
            return pid

    # ---- for tests and tools

    def network(self) -> netns.NetPlan | None:
        """The lab's namespaces (None for a loopback lab)."""
        return self._net(self._require())

    def public_host(self) -> str:
        """Where the front door and every public port listen: 127.0.0.1, or the wan
        address of a namespaced lab (reachable from inside its namespaces)."""
        return netns.public_host(self.network())

    def recorded_pids(self) -> dict[str, int]:
        """Every pid lab.json names now (components and retired ones)."""
        state = self._load() or {"components": {}}
        pids = {
            name: comp.get("pid") or comp.get("last_pid")
            for name, comp in state["components"].items()
            if comp.get("pid") or comp.get("last_pid")
        }
        for module, pid in state.get("retired_pids", []):
            pids[f"{module} {pid}"] = pid
        return pids

    def processes(self) -> list[tuple[int, str]]:
        """Live lab processes of this directory found in /proc: (pid, module)."""
        return lab_processes(self.directory)

    def client_homes(self) -> dict[str, str]:
        """client -> home server from fleet.yaml."""
        from ppo_dr.inventory import load_fleet

        fleet = load_fleet(self.fleet_file)
        return {c.id: c.server for c in fleet.clients}
