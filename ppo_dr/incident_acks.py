"""Acknowledging an incident: the one rule for an ack typed in a terminal
(``ppo-dr incident ack``) and one given in the Prefect UI (the escalation run's task).

The first ack goes through ``store.acknowledge``; a later one (paging re-triggered after
``ack_timeout``) is a timeline entry of the same kind, which the escalation decision
reads as a new acknowledgement. Whichever of the two records an ack first wins; the
other finds it and records nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from ppo_dr.errors import PermanentError

if TYPE_CHECKING:
    from ppo_dr.store import Store

#: Timeline kind of every acknowledgement (the store's own, and re-acks after a re-trigger).
ACK_KIND = "acknowledged"


def acknowledgements(store: Store, incident_id: int) -> list[datetime]:
    """Every acknowledgement time of the incident, oldest first (from its timeline)."""
    return [e.at for e in store.timeline(incident_id) if e.kind == ACK_KIND]


def record_ack(
    store: Store,
    incident_id: int,
    by: str,
    note: str = "",
    *,
    flow_run_id: str | None = None,
    since: datetime | None = None,
) -> bool:
    """Record an acknowledgement unless one was recorded at or after *since*.

    Returns True if this call recorded it.
    """
    incident = store.incident(incident_id)
    if incident is None:
        raise PermanentError(f"no incident with id {incident_id}")
    if since is not None and any(t >= since for t in acknowledgements(store, incident_id)):
        return False
    if incident.acknowledged_at is None:
        store.acknowledge(incident_id, by, note, flow_run_id)
    else:
        message = f"acknowledged again by {by}" + (f": {note}" if note else "")
        store.add_timeline(
            incident_id,
            ACK_KIND,
            message,
            flow_run_id=flow_run_id,
            data={"by": by, "note": note},
        )
    return True
