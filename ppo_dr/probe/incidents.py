"""How the probe's checks open their incidents: idempotently, a relapse anew.

Shared by the outage runner (:mod:`ppo_dr.probe.runner`), the watchdog
(:mod:`ppo_dr.probe.watchdog`), the unattended pools (:mod:`ppo_dr.probe.pools`) and the
spares that are down (:mod:`ppo_dr.probe.spares`); the last two keep one incident open
per subject in a set with :func:`keep_open_for`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

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


def subject_key(kind: str, subject: str) -> str:
    """The dedupe key of a :func:`keep_open_for` incident: ``<kind>:<subject>``."""
    return f"{kind}:{subject}"


def keep_open_for(
    store: Store,
    kind: str,
    wanted: Mapping[str, tuple[str, dict[str, Any]]],
    back: Callable[[str], str | None],
    *,
    step: str,
    relapse_note: str,
    flow_run_id: str | None,
    at: datetime,
) -> tuple[list[Incident], list[Incident]]:
    """One minor, non-paging incident of *kind* open per subject of *wanted* (its title
    and scope; opened idempotently, a relapse anew); every other open one of *kind* is
    marked recovered with a *step* timeline entry saying *back(subject)*, unless that
    says None (not known to be back). Returns (opened now, recovered now)."""
    opened: list[Incident] = []
    for subject, (title, scope) in wanted.items():

        def open_incident(
            subject: str = subject, title: str = title, scope: dict[str, Any] = scope
        ) -> tuple[Incident, bool]:
            return store.open_incident(
                kind,
                subject_key(kind, subject),
                title,
                {**scope, "subject": subject},
                severity="minor",
                paging=False,
                flow_run_id=flow_run_id,
                at=at,
            )

        incident, created, _ = open_or_relapse(
            store, open_incident, by="probe", note=relapse_note, flow_run_id=flow_run_id, at=at
        )
        if created:
            opened.append(incident)
    recovered: list[Incident] = []
    for incident in store.incidents(states=("open", "acknowledged"), kind=kind):
        subject = str(incident.scope.get("subject", ""))
        message = None if subject in wanted else back(subject)
        if message is None:
            continue
        recovered.append(store.mark_recovered(incident.id, at=at, flow_run_id=flow_run_id))
        store.add_timeline(incident.id, step, message, flow_run_id=flow_run_id, at=at)
    return opened, recovered
