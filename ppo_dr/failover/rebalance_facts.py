"""What the rebalance and drain planners are given, read from the fleet file and the store.

The planners (:mod:`.rebalance`) are pure; this reads their input once for the CLI and
the flows alike: the failover planner's :func:`~.fleet_state.fleet_state` (placements,
catalogue, sizes) plus the servers closed now: those marked drained, and those under
an open maintenance window (on the server itself or on its data centre).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from ppo_dr.failover.fleet_state import fleet_state
from ppo_dr.failover.model import FleetState
from ppo_dr.failover.rebalance import Closures
from ppo_dr.inventory import Fleet
from ppo_dr.store import MaintenanceWindow, Store


def closures_from(fleet: Fleet, store: Store, now: datetime) -> Closures:
    """Drained servers and servers under maintenance at *now* (server or DC windows)."""
    return Closures(
        drained=frozenset(d.server_id for d in store.drained_servers()),
        maintenance=under_maintenance(fleet, store.active_maintenance(now)),
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
