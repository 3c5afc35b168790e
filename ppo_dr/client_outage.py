"""When each client of an outage answered again: the end of its own outage.

An incident ends when someone resolves it, and the probe marks it recovered only when
every target in it is up -- which never happens for a server that stays dead after its
clients were failed over. A client's outage ends earlier: when it answers through the
front door again. Two witnesses, the earliest wins:

* the probe's transitions of the client's target: the start of the run of successes
  that brought it back ``up`` (its ``down -> recovering``; a flap back to ``down``
  starts the wait again);
* the failover ledger: the declaration plus the client's RTO (declaration to healthy
  through the front door, measured by the failover's health check).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta

from ppo_dr.probe.graph import client_target
from ppo_dr.store import FailoverResult, ProbeTransition


def answering_again(transitions: Iterable[ProbeTransition]) -> datetime | None:
    """The first return to service in *transitions* (one target's, oldest first)."""
    back: datetime | None = None
    for t in transitions:
        if t.to_state == "recovering":
            back = back or t.at
        elif t.to_state == "down":
            back = None
        elif t.to_state == "up" and t.from_state in ("recovering", "down"):
            return back or t.at
    return None


def healthy_after_failover(
    results: Iterable[FailoverResult], declared_at: datetime
) -> dict[str, datetime]:
    """Client id -> when a failover's health check found it serving (declaration + RTO)."""
    return {
        r.client_id: declared_at + timedelta(seconds=r.rto_seconds)
        for r in results
        if r.outcome == "ok" and r.rto_seconds is not None
    }


def clients_back(
    clients: Sequence[str],
    transitions: Mapping[str, Sequence[ProbeTransition]],
    healthy: Mapping[str, datetime],
) -> dict[str, datetime]:
    """Client id -> when it answered again, for the *clients* a witness saw come back.

    *transitions* maps probe target ids to their transitions since the first failure;
    *healthy* is :func:`healthy_after_failover` over the incident's failovers.
    """
    back: dict[str, datetime] = {}
    for client in clients:
        seen = [answering_again(transitions.get(client_target(client), ())), healthy.get(client)]
        known = [at for at in seen if at is not None]
        if known:
            back[client] = min(known)
    return back
