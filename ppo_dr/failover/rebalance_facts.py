"""What the rebalance and drain planners are given, read from the fleet file and the store.

The planners (:mod:`.rebalance`) are pure; this reads their input once for the CLI and
the flows alike: the failover planner's :func:`~.fleet_state.fleet_state` (placements,
catalogue, sizes) plus the servers closed now: those marked drained, and those under
an open maintenance window (on the server itself or on its data centre); and each
client's load: its busiest minute of requests in the last :data:`LOAD_WINDOW`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Final

from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.model import FleetState
from ppo_dr.failover.rebalance import Closures
from ppo_dr.inventory import Fleet
from ppo_dr.store import MaintenanceWindow, Store

#: How far back a client's load is read (its busiest minute in it counts).
LOAD_WINDOW: Final = timedelta(hours=1)


def closures_from(fleet: Fleet, store: Store, now: datetime) -> Closures:
    """Drained servers and servers under maintenance at *now* (server or DC windows),
    and each client's peak requests per minute over the last :data:`LOAD_WINDOW`."""
    return Closures(
        drained=frozenset(d.server_id for d in store.drained_servers()),
        maintenance=under_maintenance(fleet, store.active_maintenance(now)),
        rpm=store.peak_rpm(now - LOAD_WINDOW),
    )


def under_maintenance(fleet: Fleet, windows: list[MaintenanceWindow]) -> frozenset[str]:
    """The servers *windows* cover: a server window covers it, a DC window its servers."""
    servers = {w.scope_id for w in windows if w.scope_kind == "server"}
    dcs = {w.scope_id for w in windows if w.scope_kind == "dc"}
    return frozenset(s.id for s in fleet.servers if s.id in servers or s.dc in dcs)


def rebalance_inputs(
    fleet_file: Path | None, down: tuple[str, ...], now: datetime
) -> tuple[FleetState, Closures]:
    """The fleet state and the closed servers, from the fleet file and the store."""
    from ppo_dr.mirror.runbook import store_url

    state = fleet_state(fleet_file, down, now)
    with Store.open(store_url(state.fleet)) as store:
        return state, closures_from(state.fleet, store, now)
