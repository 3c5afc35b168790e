"""The off-site probe: checks (async I/O), the outage state machine and inhibition (pure).

* :mod:`ppo_dr.probe.checks` -- HTTP(S)/TCP checks over one aiohttp session; a cycle
  over 1,000 targets in well under 3 s; every result is an :class:`Observation`.
* :mod:`ppo_dr.probe.state` -- ``up → pending → down → recovering → up`` per target,
  transitions returned as values; optional quorum over vantages.
* :mod:`ppo_dr.probe.graph` -- client → server → DC inhibition: one outage per cause,
  with a stable dedupe key.

:func:`fleet_checks` says what to check for a fleet; the probe flow wires the three
together through :class:`~ppo_dr.probe.runner.ProbeRunner`, which persists transitions
(per-minute counts and the heartbeat in :mod:`ppo_dr.probe.minutes`) and opens
incidents (idempotently, a relapse anew: :mod:`ppo_dr.probe.incidents`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ppo_dr.probe.checks import (
    Check,
    HttpCheck,
    Observation,
    Prober,
    TcpCheck,
    run_cycle,
)
from ppo_dr.probe.graph import (
    FleetGraph,
    Outage,
    client_target,
    outage_key,
    outages,
    server_target,
)
from ppo_dr.probe.state import (
    OutagePolicy,
    OutageTracker,
    TargetState,
    TargetStatus,
    Transition,
    cadence_gap,
    observe,
    quorum_observation,
    replay,
)

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

__all__ = [
    "Check",
    "FleetGraph",
    "HttpCheck",
    "Observation",
    "Outage",
    "OutagePolicy",
    "OutageTracker",
    "Prober",
    "TargetState",
    "TargetStatus",
    "TcpCheck",
    "Transition",
    "cadence_gap",
    "client_target",
    "fleet_checks",
    "observe",
    "outage_key",
    "outages",
    "quorum_observation",
    "replay",
    "run_cycle",
    "server_target",
]


def fleet_checks(
    fleet: Fleet,
    *,
    front_door: str | None = None,
) -> list[Check]:
    """One check per server with an HTTP endpoint (``/health``) and per client.

    A client is checked through *front_door* (``<front_door>/c/<client>/health``, as the
    lab serves it) when given, else at its public URL: that is the path users take, so
    a routing fault is seen as an outage. Spares are checked whether they host clients
    or not: an idle one is a witness of its data centre
    (:class:`~ppo_dr.probe.graph.FleetGraph`), and one whose outage is still open must
    be seen answering again for that outage to recover.
    """
    budget = fleet.timing.latency_budget_ms
    checks: list[Check] = []
    for server in fleet.servers:
        if server.http is None:
            continue
        host = f"[{server.http.host}]" if ":" in server.http.host else server.http.host
        url = f"http://{host}:{server.http.port}/health"
        checks.append(HttpCheck(server_target(server.id), url, latency_budget_ms=budget))
    for client in fleet.clients:
        if front_door is not None:
            url = f"{front_door.rstrip('/')}/c/{client.id}/health"
        else:
            url = client.url
        checks.append(HttpCheck(client_target(client.id), url, latency_budget_ms=budget))
    return checks
