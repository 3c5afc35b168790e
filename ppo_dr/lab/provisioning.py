"""Servers added to and released from a running lab (what the lab provider calls).

A server added at run time gets keys, ports, a route through netsim, a known_hosts
line and a fleet.yaml entry, and is marked ``provisioned`` in ``lab.json``: only such
servers can be released again; the fixed topology stays.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from ppo_dr.errors import LabError
from ppo_dr.ids import is_valid_id
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab import topology
from ppo_dr.lab.configs import LabConfigs
from ppo_dr.lab.netns import public_host
from ppo_dr.lab.processes import is_ours
from ppo_dr.lab.status import LabStatus
from ppo_dr.lab.topology import ServerPlan

if TYPE_CHECKING:
    from ppo_dr.inventory import Server


def _article(word: str) -> str:
    return f"an {word}" if word[:1] in "aeiou" else f"a {word}"


def _checked_mirrors(
    server_id: str, dc: str, mirrors: Sequence[str], servers: Iterable[ServerPlan]
) -> tuple[str, ...]:
    """*mirrors* for a new app server in *dc*, if they are a valid pair (on-site first)."""
    by_id = {s.id: s for s in servers}
    for mirror_id in mirrors:
        found = by_id.get(mirror_id) if isinstance(mirror_id, str) else None
        if found is None:
            raise LabError(f"mirror {mirror_id!r} of {server_id} is not a server of the lab")
        if found.role != "mirror":
            raise LabError(
                f"{mirror_id} cannot mirror {server_id}: it is {_article(found.role)} server"
            )
    if len(set(mirrors)) != len(mirrors):
        raise LabError(f"mirrors of {server_id} name a server twice: {', '.join(mirrors)}")
    onsite = [m for m in mirrors if by_id[m].dc == dc]
    if len(onsite) != 1 or len(onsite) == len(mirrors):
        raise LabError(
            f"mirrors of {server_id} must be one mirror in {dc} and at least one in another "
            f"data centre (got {', '.join(mirrors) or 'none'})"
        )
    return (onsite[0], *(m for m in mirrors if m != onsite[0]))


class LabProvisioning(LabStatus, LabConfigs):
    """Starting and releasing servers of a running lab."""

    def start_server(
        self,
        server_id: str,
        dc: str,
        role: str = "spare",
        *,
        mirrors: Sequence[str] | None = None,
        exist_ok: bool = False,
        timeout: float = 15.0,
    ) -> Server:
        """Provision one more server: keys, ports, route, known_hosts, fleet.yaml, process.

        Returns its fleet entry once it answers through its public ports. An app server
        mirrors to *mirrors* when given (a failover plan's pair: existing mirror
        servers, exactly one of them in *dc*, at least one elsewhere), else to an
        on-site mirror in *dc* and an off-site one (same country first).

        With *exist_ok*, a server this method started before under the same id, DC,
        role (and mirrors, if given) is returned instead of refused, and started again
        if its process died without a recorded fault: a provider rerun after a crash
        gets the same server, never a second one.
        """
        from ppo_dr.inventory import load_fleet

        if not is_valid_id(server_id):
            raise LabError(f"server id {server_id!r} does not match the fleet id syntax")
        if role not in ("app", "mirror", "spare"):
            raise LabError(f"unknown role {role!r}: one of app, mirror, spare")
        if mirrors is not None and role != "app":
            raise LabError(f"only an app server has mirrors ({server_id} would be {role})")
        with self._locked():
            state = self._require_running()
            comps = state["components"]
            fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
            dcs = [d["id"] for d in fleet_data["data_centres"]]
            if dc not in dcs:
                raise LabError(f"unknown data centre {dc!r}: one of {', '.join(dcs)}")
            known = {s["id"] for s in fleet_data["servers"]} | set(comps)
            if server_id in known:
                if not exist_ok:
                    raise LabError(f"server {server_id!r} exists already")
                self._adopt_server(state, fleet_data, server_id, dc, role, mirrors, timeout)
                return load_fleet(self.fleet_file).server(server_id)
            existing = [ServerPlan(s["id"], s["dc"], s["role"]) for s in fleet_data["servers"]]
            if role != "app":
                planned: tuple[str, ...] = ()
            elif mirrors is None:
                planned = topology.mirrors_for_new_app(dc, existing)
            else:
                planned = _checked_mirrors(server_id, dc, mirrors, existing)
            plan = ServerPlan(server_id, dc, role, planned)  # type: ignore[arg-type]

            key_file = self.directory / "keys" / lab_keys.host_key_name(server_id)
            public = lab_keys.generate_keypair(key_file, f"{server_id}@lab")
            needed = 4 if plan.serves_http else 2
            recorded = [
                port
                for comp in comps.values()
                for port in [*(comp.get("ports") or {}).values(), comp.get("port")]
                if port
            ]
            ports = topology.allocate_server_ports(
                plan, topology.free_ports(needed, exclude=recorded)
            )

            net = self._net(state)
            host = public_host(net)
            fleet_data["servers"].append(topology.server_entry(plan, ports, public, host))
            self._replace_fleet(fleet_data, server_id)

            comps[server_id] = self._server_component(plan, ports, net)
            comps[server_id]["provisioned"] = True
            self._write_server_config(plan, ports, net)
            lab_keys.add_known_host(self.known_hosts, ports.ssh, public, host)
            self._write_routes(comps, net)
            self._save(state)
            self._reload_netsim(state)
            self._spawn(state, server_id)
            self._wait_healthy(state, [server_id], time.monotonic() + timeout)
        return load_fleet(self.fleet_file).server(server_id)

    def _adopt_server(
        self,
        state: dict[str, Any],
        fleet_data: Mapping[str, Any],
        server_id: str,
        dc: str,
        role: str,
        mirrors: Sequence[str] | None,
        timeout: float,
    ) -> None:
        """:meth:`start_server` ran before for *server_id*: check it is the same server
        (never hand out a fixed or different one) and that it answers."""
        comp = state["components"].get(server_id)
        entry = next((s for s in fleet_data["servers"] if s["id"] == server_id), None)
        if comp is None or comp["kind"] != "server" or not comp.get("provisioned") or not entry:
            raise LabError(
                f"server {server_id!r} exists already and was not started by start_server"
            )
        if (comp["dc"], comp["role"]) != (dc, role):
            raise LabError(
                f"server {server_id!r} exists already as {_article(comp['role'])} server in "
                f"{comp['dc']}, not as {_article(role)} server in {dc}"
            )
        if mirrors is not None and tuple(entry.get("mirrors") or ()) != tuple(mirrors):
            raise LabError(
                f"server {server_id!r} exists already with mirrors "
                f"{', '.join(entry.get('mirrors') or ()) or 'none'}, not {', '.join(mirrors)}"
            )
        _pid, pstate = self._pid_state(comp)
        if pstate == "dead" and not state["faults"].get(server_id):
            self._spawn(state, server_id)
        self._wait_healthy(state, [server_id], time.monotonic() + timeout)

    def remove_server(self, server_id: str, *, missing_ok: bool = False) -> None:
        """Release a server added by :meth:`start_server`: stop it, forget its route,
        host key entry and fleet.yaml entry. Its files stay for a post-mortem.

        Refused while a client is placed on it or an app server mirrors to it. With
        *missing_ok* a server that is gone already (released before) is not an error.
        """
        with self._locked():
            state = self._require_running()
            comps = state["components"]
            comp = comps.get(server_id)
            if comp is None and missing_ok and is_valid_id(server_id):
                fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
                if all(s["id"] != server_id for s in fleet_data["servers"]):
                    return
            if comp is None or comp["kind"] != "server":
                raise LabError(f"unknown server {server_id!r}")
            if not comp.get("provisioned"):
                raise LabError(
                    f"{server_id} belongs to the lab's fixed topology; only servers added "
                    "at run time (start_server) can be removed"
                )
            from ppo_dr.store import Store

            store = Store(self.store_url)
            try:
                placed = sorted(p.client_id for p in store.placements() if p.server_id == server_id)
            finally:
                store.close()
            if placed:
                raise LabError(f"{server_id} still hosts clients: {', '.join(placed)}")
            fleet_data = yaml.safe_load(self.fleet_file.read_text(encoding="utf-8"))
            fleet_data["servers"] = [s for s in fleet_data["servers"] if s["id"] != server_id]
            self._replace_fleet(fleet_data, server_id)
            pid = comp.get("pid")
            if pid and is_ours(pid, comp["module"], self.directory):
                self._stop_pids([(server_id, pid)])
            del comps[server_id]
            state["faults"].pop(server_id, None)
            self._write_cut([s for s in self._read_cut() if s != server_id])
            self._write_routes(comps, self._net(state))
            lab_keys.remove_known_host(
                self.known_hosts, comp["ports"]["ssh"], public_host(self._net(state))
            )
            self._save(state)
            self._reload_netsim(state)
