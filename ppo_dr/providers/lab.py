"""The lab provider: new app servers are processes of the embedded lab fleet.

Provisioning is :meth:`Lab.start_server <ppo_dr.lab.supervisor.Lab.start_server>`
(keys, ports, netsim route, known_hosts, fleet.yaml entry, process), so a new server
has a pinned host key and answers SSH and HTTP like any other lab server within
seconds. Routing needs no push: the lab's front door routes by the store's
placements, so :meth:`LabProvider.route` only waits (bounded) until the front door's
``/routes`` shows the placement the flow switched, which proves the router follows it.
"""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ppo_dr.errors import LabError, TransientError
from ppo_dr.ids import check_id
from ppo_dr.providers.base import ProvisionedServer, checked_request

if TYPE_CHECKING:
    from ppo_dr.failover.plan import ProvisionRequest

START_TIMEOUT_S = 20.0
ROUTE_TIMEOUT_S = 10.0
HTTP_TIMEOUT_S = 2.0


class LabProvider:
    """App servers in one data centre of the lab in *lab_dir* (``fleet.yaml``'s directory)."""

    name = "lab"

    def __init__(
        self,
        dc_id: str,
        *,
        lab_dir: Path,
        start_timeout: float = START_TIMEOUT_S,
        route_timeout: float = ROUTE_TIMEOUT_S,
    ) -> None:
        from ppo_dr.lab.supervisor import Lab

        self.dc_id = check_id(dc_id, "data centre id")
        self.lab = Lab(lab_dir)
        self.start_timeout = start_timeout
        self.route_timeout = route_timeout

    def provision(self, request: ProvisionRequest) -> ProvisionedServer:
        """Start app server ``request.server_id`` with the planned mirrors (or derived
        ones when the plan names none); the running one again on a rerun."""
        from ppo_dr.inventory import load_fleet

        checked_request(request, self.dc_id, self.name)
        existed = any(s.id == request.server_id for s in load_fleet(self.lab.fleet_file).servers)
        started = time.monotonic()
        server = self.lab.start_server(
            request.server_id,
            request.dc,
            "app",
            mirrors=tuple(request.mirrors) or None,
            exist_ok=True,
            timeout=self.start_timeout,
        )
        return ProvisionedServer(
            server=server,
            provider=self.name,
            created=not existed,
            detail={
                "lab_dir": str(self.lab.directory),
                "dc": request.dc,
                "seconds": f"{time.monotonic() - started:.2f}",
            },
        )

    def release(self, server_id: str) -> None:
        """Stop the server and forget it (route, known_hosts, fleet.yaml); gone already
        is fine. Refused (LabError) while a client is placed on it, or for a server of
        the lab's fixed topology."""
        self.lab.remove_server(check_id(server_id, "server id"), missing_ok=True)

    def route(self, client_id: str, server_id: str) -> str:
        """Wait until the front door routes *client_id* to *server_id*; a receipt.

        TransientError when it still routes elsewhere after ``route_timeout``: the
        placement was not switched yet (``Store.move_client`` comes first) or the
        front door cannot read the store.
        """
        client = check_id(client_id, "client id")
        server = check_id(server_id, "server id")
        port = self._frontdoor_port()
        host = self.lab.public_host()
        started = time.monotonic()
        deadline = started + self.route_timeout
        seen: str = "no answer yet"
        while True:
            routes, problem = _get_routes(host, port)
            if routes is not None:
                current = routes.get(client)
                if current == server:
                    return (
                        f"lab front door {host}:{port} routes {client} -> {server} "
                        f"(confirmed after {time.monotonic() - started:.2f} s)"
                    )
                seen = f"it routes {client} to {current}" if current else f"{client} has no route"
            else:
                seen = problem
            if time.monotonic() >= deadline:
                raise TransientError(
                    f"lab front door {host}:{port} does not route {client} to {server} "
                    f"after {self.route_timeout:g} s: {seen} (is the placement switched?)"
                )
            time.sleep(0.1)

    def _frontdoor_port(self) -> int:
        try:
            state = json.loads(self.lab.state_file.read_text(encoding="utf-8"))
            port = state["frontdoor_port"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LabError(
                f"no front door recorded in {self.lab.state_file}: is the lab up?"
            ) from exc
        if not isinstance(port, int) or not 0 < port < 65536:
            raise LabError(f"{self.lab.state_file} records no valid front door port")
        return port


def _get_routes(host: str, port: int) -> tuple[dict[str, str] | None, str]:
    """The front door's ``/routes`` (client -> server), or None and why not."""
    conn = http.client.HTTPConnection(host, port, timeout=HTTP_TIMEOUT_S)
    try:
        conn.request("GET", "/routes", headers={"Connection": "close"})
        response = conn.getresponse()
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        return None, f"front door unreachable ({getattr(exc, 'strerror', None) or exc})"
    finally:
        conn.close()
    if response.status != 200:
        return None, f"front door /routes answered {response.status} {response.reason}"
    try:
        routes = json.loads(body)
    except ValueError:
        return None, "front door /routes is not JSON"
    if not isinstance(routes, dict):
        return None, "front door /routes is not a mapping"
    return {str(k): str(v) for k, v in routes.items()}, ""
