"""Idle spares that are down: the next failover has less room, and nobody would know.

An idle spare (it hosts no client) is checked as a witness of its data centre
(:mod:`ppo_dr.probe.graph`). Its own outage opens no outage incident, since no client
is affected, and pages nobody. But a failover moves clients onto spares: one that is
down shrinks what the next failover can do, and the operator should fix it before it
is needed. So the probe raises a **non-paging** ``spare-down`` incident per idle spare
in outage, naming it and its DC, and marks it recovered once the spare answers again
(or it left the fleet, or became a client's home, whose own checks then speak for it).
A spare whose whole DC is out is left to that DC's outage.

:func:`spares_down` is the pure decision; :func:`record_spares` applies it to the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Final

from ppo_dr.probe.graph import FleetGraph, Outage, server_target
from ppo_dr.probe.incidents import keep_open_for, utc_stamp
from ppo_dr.probe.state import TargetStatus
from ppo_dr.store import Incident, Store

#: Incident kind of an idle spare in outage.
SPARE_DOWN_KIND: Final = "spare-down"


def spares_down(
    states: Mapping[str, TargetStatus], graph: FleetGraph, found: Iterable[Outage]
) -> list[str]:
    """The idle spares in outage outside the DCs whose outage *found* already names, sorted."""
    dcs_out = {o.subject_id for o in found if o.level == "dc"}
    return sorted(
        spare
        for spare in graph.witnesses
        if (status := states.get(server_target(spare))) is not None
        and status.state.in_outage
        and graph.server_dc.get(spare) not in dcs_out
    )


def record_spares(
    store: Store,
    down: Iterable[str],
    graph: FleetGraph,
    at: datetime,
    *,
    flow_run_id: str | None = None,
) -> tuple[list[Incident], list[Incident]]:
    """Open (idempotently) a non-paging incident per spare in *down*; mark recovered
    those of spares no longer down. Returns (opened now, recovered now)."""

    def wanted(spare: str) -> tuple[str, dict[str, Any]]:
        dc = graph.server_dc.get(spare, "?")
        title = f"spare {spare} in {dc} down: a failover has one spare fewer there"
        return title, {"level": "spare", "servers": [spare], "dcs": [dc]}

    def back(spare: str) -> str:
        if spare not in graph.server_dc:
            return f"spare {spare} left the fleet"
        if spare in graph.witnesses:
            return f"spare {spare} answers again at {utc_stamp(at)}"
        return f"spare {spare} hosts clients now: their own checks speak for it"

    return keep_open_for(
        store,
        SPARE_DOWN_KIND,
        {spare: wanted(spare) for spare in sorted(down)},
        back,
        step="spare-back",
        relapse_note="down again",
        flow_run_id=flow_run_id,
        at=at,
    )
