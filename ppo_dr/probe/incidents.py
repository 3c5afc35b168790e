"""How the probe's checks open their incidents: idempotently, a relapse anew.

Shared by the outage runner (:mod:`ppo_dr.probe.runner`), the watchdog
(:mod:`ppo_dr.probe.watchdog`) and the unattended pools (:mod:`ppo_dr.probe.pools`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ppo_dr.store import Incident, Store


def utc_stamp(at: datetime) -> str:
    """*at* in UTC as ``2026-11-30T05:00:00Z`` (timeline wording)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def open_or_relapse(
    store: Store,
    open_incident: Callable[[], tuple[Incident, bool]],
    *,
    by: str,
    note: str,
    flow_run_id: str | None,
    at: datetime,
) -> tuple[Incident, bool, int | None]:
    """Open an incident idempotently (*open_incident*), or continue a relapse.

    Down again after recovery, before anyone resolved it: that incident is over
    (resolving it, by *by* with *note*, ends its escalation) and a new one is opened,
    paged anew. Returns (incident, created, the id of the incident it continues or None).
    """
    incident, created = open_incident()
    if created or incident.state != "recovered":
        return incident, created, None
    store.resolve(incident.id, by=by, note=note, flow_run_id=flow_run_id, at=at)
    again, created = open_incident()
    return again, created, incident.id
