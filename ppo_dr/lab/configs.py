"""The files a lab is generated from: fleet.yaml, keys, server.json, routes.json and the
front door's and workload's configs, plus each component's record in ``lab.json``.

Formats in ``docs/lab.md``. A fleet.yaml the lab writes always passes the inventory
check before it replaces the old one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ppo_dr.errors import InventoryError, LabError
from ppo_dr.lab import keys as lab_keys
from ppo_dr.lab import topology
from ppo_dr.lab.labdir import LabDir, now_text
from ppo_dr.lab.netns import NetPlan, public_host
from ppo_dr.lab.processes import MODULES
from ppo_dr.lab.store_network import StoreUrls
from ppo_dr.lab.topology import ServerPlan, ServerPorts, write_text_atomic

Progress = Callable[[str], None]


class LabConfigs(LabDir):
    """Writing the generated configuration of a lab directory."""

    def _generate(
        self,
        *,
        clients: int,
        size_mb: int,
        fast: bool,
        seed: int,
        say: Progress,
        net: NetPlan | None = None,
        store: StoreUrls | None = None,
        app_servers: int = topology.DEFAULT_APP_SERVERS,
    ) -> dict[str, Any]:
        """Keys, ports, configs and fleet.yaml (checked); lab.json in state 'starting'.

        With *net* (a namespaced lab) every endpoint is on the wan address and each
        component records the namespace it runs in. With *store* the state store is
        that database (fleet.yaml names it as this host sees it, the front door as
        the wan sees it), else a SQLite file in the lab.
        """
        d = self.directory
        host = public_host(net)
        for sub in ("keys", "net", "logs", "servers", "quarantine", "workload"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        (d / "keys").chmod(0o700)
        servers = list(topology.plan_servers(app_servers))
        client_plans = topology.plan_clients(clients, servers)
        keys = lab_keys.generate_lab_keys(d / "keys", [s.id for s in servers])
        free = topology.free_ports(topology.ports_needed(servers) + 1)
        frontdoor_port = free.pop(0)
        ports = {s.id: topology.allocate_server_ports(s, free) for s in servers}
        say(f"generated the operator key and host keys for {len(servers)} servers")

        document = topology.fleet_document(
            lab_dir=d,
            servers=servers,
            clients=client_plans,
            ports=ports,
            host_keys=keys.host_public,
            frontdoor_port=frontdoor_port,
            size_mb=size_mb,
            fast=fast,
            host=host,
            store_url=store.url if store else None,
        )
        topology.write_yaml(self.fleet_file, document, topology.FLEET_HEADER)
        self._check_fleet(self.fleet_file)
        lab_keys.write_known_hosts(
            self.known_hosts, [(ports[s.id].ssh, keys.host_public[s.id]) for s in servers], host
        )
        say(
            f"fleet.yaml: {len(topology.DATA_CENTRES)} data centres, {len(servers)} servers, "
            f"{len(client_plans)} clients: valid"
        )

        components: dict[str, Any] = {
            "netsim": {
                "kind": "netsim",
                "module": MODULES["netsim"],
                "config": str(self.routes_file),
                "pid": None,
                "netns": net.wan if net else None,
            }
        }
        for server in servers:
            components[server.id] = self._server_component(server, ports[server.id], net)
            self._write_server_config(server, ports[server.id], net)
        self._write_routes(components, net)
        write_text_atomic(self.cut_file, json.dumps({"servers": []}) + "\n")
        components["frontdoor"] = {
            "kind": "frontdoor",
            "module": MODULES["frontdoor"],
            "config": str(d / "frontdoor.json"),
            "port": frontdoor_port,
            "pid": None,
            "netns": net.wan if net else None,
        }
        components["workload"] = {
            "kind": "workload",
            "module": MODULES["workload"],
            "config": str(d / "workload.json"),
            "pid": None,
            "netns": net.wan if net else None,
        }
        frontdoor = {
            "lab_dir": str(d),
            "port": frontdoor_port,
            "fleet": str(self.fleet_file),
            "store_url": store.inner_url if store else self.store_url,
            "bind": host,
            "processes": topology.frontdoor_processes(len(client_plans)),
        }
        workload = {
            "lab_dir": str(d),
            "frontdoor": f"http://{host}:{frontdoor_port}",
            "interval": topology.workload_interval(len(client_plans)),
            "acks": str(d / "workload" / "acks.jsonl"),
            "fleet": str(self.fleet_file),
            "store_url": store.inner_url if store else self.store_url,
        }
        write_text_atomic(d / "frontdoor.json", json.dumps(frontdoor, indent=1) + "\n")
        write_text_atomic(d / "workload.json", json.dumps(workload, indent=1) + "\n")
        state: dict[str, Any] = {
            "version": 1,
            "lab_dir": str(d),
            "state": "starting",
            "created_at": now_text(),
            "options": {
                "clients": clients,
                "size_mb": size_mb,
                "fast": fast,
                "seed": seed,
                "app_servers": app_servers,
            },
            "frontdoor_port": frontdoor_port,
            "components": components,
            "faults": {},
            "retired_pids": [],
            "net": net.as_dict() if net else None,
        }
        if store is not None:
            state["store"] = {"url": store.url, "inner_url": store.inner_url}
        self._save(state)
        return state

    def _check_fleet(self, path: Path) -> None:
        from ppo_dr.inventory import load_fleet

        try:
            load_fleet(path)
        except InventoryError as exc:
            raise LabError(
                f"the generated fleet does not pass the inventory check (a bug): {exc}"
            ) from exc

    def _server_component(
        self, server: ServerPlan, ports: ServerPorts, net: NetPlan | None
    ) -> dict[str, Any]:
        return {
            "kind": "server",
            "module": MODULES["server"],
            "config": str(self.server_dir(server.id) / "server.json"),
            "dc": server.dc,
            "role": server.role,
            "data_root": server.data_root,
            "ports": ports.as_dict(),
            "pid": None,
            "netns": net.dc(server.dc).namespace if net else None,
        }

    def _write_server_config(
        self, server: ServerPlan, ports: ServerPorts, net: NetPlan | None
    ) -> None:
        d = self.directory
        config = {
            "id": server.id,
            "dc": server.dc,
            "role": server.role,
            "lab_dir": str(d),
            "fs_root": str(self.server_dir(server.id) / "fs"),
            "data_root": server.data_root,
            "ssh_port": ports.ssh_internal,
            "http_port": ports.http_internal,
            "host_key": str(d / "keys" / lab_keys.host_key_name(server.id)),
            "authorized_keys": str(d / "keys" / lab_keys.AUTHORIZED_KEYS),
            "user": topology.SSH_USER,
            "fleet": str(self.fleet_file),
            "bind": net.dc(server.dc).address if net else "127.0.0.1",
        }
        self.data_root(server.id, server.data_root).mkdir(parents=True, exist_ok=True)
        write_text_atomic(
            self.server_dir(server.id) / "server.json", json.dumps(config, indent=1) + "\n"
        )

    def _write_routes(self, components: Mapping[str, Any], net: NetPlan | None) -> None:
        routes = []
        host = public_host(net)
        for name, comp in components.items():
            if comp["kind"] != "server":
                continue
            ports = ServerPorts.from_dict(comp["ports"])
            target = net.dc(comp["dc"]).address if net else "127.0.0.1"
            routes.append(
                {
                    "server": name,
                    "dc": comp["dc"],
                    "kind": "ssh",
                    "listen": ports.ssh,
                    "target": ports.ssh_internal,
                    "listen_host": host,
                    "target_host": target,
                }
            )
            if ports.http is not None:
                routes.append(
                    {
                        "server": name,
                        "dc": comp["dc"],
                        "kind": "http",
                        "listen": ports.http,
                        "target": ports.http_internal,
                        "listen_host": host,
                        "target_host": target,
                    }
                )
        document = {
            "lab_dir": str(self.directory),
            "cut_file": str(self.cut_file),
            "routes": routes,
        }
        write_text_atomic(self.routes_file, json.dumps(document, indent=1) + "\n")

    def _replace_fleet(self, fleet_data: Mapping[str, Any], server_id: str) -> None:
        """Write *fleet_data* as the new fleet.yaml, only if it passes the inventory check."""
        tmp = self.fleet_file.with_name(f".fleet.{server_id}.yaml")
        try:
            topology.write_yaml(tmp, fleet_data, topology.FLEET_HEADER)
            self._check_fleet(tmp)
            tmp.replace(self.fleet_file)
        finally:
            tmp.unlink(missing_ok=True)
