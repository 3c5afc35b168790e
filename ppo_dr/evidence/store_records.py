"""What the store holds about one incident, as JSON-ready records, one list per file.

The evidence bundle's store half: the incident and its timeline, the notices (with
receipts, attempts and the last error of each), the probe observations of the affected
targets from the first failure to recovery, the failover ledger (plans, steps, results),
the catalogue rows of the snapshots restored, the placement history of the affected
clients, the maintenance windows that overlapped the incident, and the fleet file in
force (the validated model: secrets appear only as their references).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from ppo_dr.errors import PermanentError
from ppo_dr.probe.graph import client_target, server_target
from ppo_dr.store import Incident, MaintenanceWindow, Store, TimelineEntry
from ppo_dr.store.base import to_record
from ppo_dr.store.schema import MaintenanceRow

if TYPE_CHECKING:
    from ppo_dr.inventory import Fleet

Record = dict[str, Any]


def known_incident(store: Store, incident_id: int) -> Incident:
    """The incident, or an error that names the ids the store does hold."""
    incident = store.incident(incident_id)
    if incident is not None:
        return incident
    ids = [i.id for i in store.incidents()]
    known = f"the store holds incidents {min(ids)}-{max(ids)}" if ids else "the store holds none"
    raise PermanentError(f"no incident with id {incident_id}: {known}")


def first_failure(incident: Incident, timeline: Iterable[TimelineEntry]) -> datetime:
    """When the trouble began: the timeline's ``first-failure``, else the declaration."""
    for entry in timeline:
        if entry.kind == "first-failure":
            return entry.at
    return incident.opened_at


def incident_window(
    incident: Incident, timeline: Iterable[TimelineEntry], now: datetime
) -> tuple[datetime, datetime]:
    """From the first failure to recovery (else resolution, else *now*)."""
    end = incident.recovered_at or incident.resolved_at or now
    return first_failure(incident, timeline), end


def affected_targets(incident: Incident) -> list[str]:
    """The probe targets of the incident's scope: its server(s) and every client."""
    scope = incident.scope or {}
    servers = [scope["server"]] if isinstance(scope.get("server"), str) else []
    servers += [s for s in scope.get("servers", ()) if isinstance(s, str)]
    clients = [c for c in scope.get("clients", ()) if isinstance(c, str)]
    if isinstance(scope.get("client"), str):
        clients.append(scope["client"])
    targets = [server_target(s) for s in servers] + [client_target(c) for c in clients]
    return list(dict.fromkeys(targets))


def maintenance_scopes(incident: Incident) -> set[tuple[str, str]]:
    """The ``(scope kind, id)`` pairs a maintenance window must name to apply to the
    incident: its servers, data centres and clients."""
    scope = incident.scope or {}
    pairs = {("dc", d) for d in scope.get("dcs", ()) if isinstance(d, str)}
    if isinstance(scope.get("dc"), str):
        pairs.add(("dc", scope["dc"]))
    for target in affected_targets(incident):
        kind, _, subject = target.partition(":")
        pairs.add((kind, subject))
    return pairs


def as_record(item: object) -> Record:
    """A store record (frozen dataclass) as a plain dict with ISO-8601 times."""
    assert dataclasses.is_dataclass(item) and not isinstance(item, type)
    return {f.name: _plain(getattr(item, f.name)) for f in dataclasses.fields(item)}


def _plain(value: object) -> object:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    return value


def maintenance_between(store: Store, start: datetime, end: datetime) -> list[MaintenanceWindow]:
    """Maintenance windows that were in force at some moment of ``[start, end]``."""
    stmt = (
        select(MaintenanceRow)
        .where(
            and_(
                MaintenanceRow.starts_at <= end,
                or_(MaintenanceRow.ends_at.is_(None), MaintenanceRow.ends_at >= start),
            )
        )
        .order_by(MaintenanceRow.starts_at, MaintenanceRow.id)
    )
    with Session(store.engine) as session:
        return [to_record(MaintenanceWindow, row) for row in session.scalars(stmt)]


def fleet_record(fleet: Fleet, path: Path) -> Record:
    """The fleet file in force: where, its sha256, and the validated model (references
    to secrets, never their values: the file cannot hold values)."""
    return {
        "path": str(path),
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "fleet": fleet.model_dump(mode="json"),
    }


def store_sections(
    store: Store,
    incident_id: int,
    *,
    now: datetime,
    fleet: Fleet | None = None,
    fleet_path: Path | None = None,
) -> dict[str, list[Record]]:
    """Every store record of the incident, by bundle file stem (``timeline`` ...)."""
    incident = known_incident(store, incident_id)
    timeline = store.timeline(incident_id)
    start, end = incident_window(incident, timeline, now)
    targets = affected_targets(incident)
    transitions = [
        t for target in targets for t in store.probe_transitions(target, since=start) if t.at <= end
    ]
    minutes = [
        m
        for target in targets
        for m in store.probe_minutes(target, since=start.replace(second=0, microsecond=0))
        if m.minute <= end
    ]
    failovers = list(reversed(store.failovers(incident_id=incident_id)))
    steps = [s for f in failovers for s in store.failover_steps(f.plan_id)]
    results = [r for f in failovers for r in store.failover_results(f.plan_id)]
    restored = {(r.client_id, r.source_mirror, r.snapshot_id) for r in results if r.snapshot_id}
    snapshots = [
        s
        for client in sorted({c for c, _, _ in restored})
        for s in store.snapshots(client)
        if (s.client_id, s.mirror_id, s.snapshot_id) in restored
    ]
    clients = [t.removeprefix("client:") for t in targets if t.startswith("client:")]
    covered = maintenance_scopes(incident)
    sections: dict[str, list[Record]] = {
        "incident": [as_record(incident)],
        "timeline": [as_record(e) for e in timeline],
        "notices": [as_record(n) for n in store.notices(incident_id)],
        "probe_transitions": [as_record(t) for t in transitions],
        "probe_minutes": [as_record(m) for m in minutes],
        "failovers": [as_record(f) for f in failovers],
        "failover_steps": [as_record(s) for s in steps],
        "failover_results": [as_record(r) for r in results],
        "snapshots_restored": [as_record(s) for s in snapshots],
        "placement_history": [as_record(m) for c in clients for m in store.placement_history(c)],
        "maintenance_windows": [
            as_record(w)
            for w in maintenance_between(store, start, end)
            if (w.scope_kind, w.scope_id) in covered
        ],
    }
    if fleet is not None and fleet_path is not None:
        sections["fleet"] = [fleet_record(fleet, fleet_path)]
    return sections


def run_ids(sections: dict[str, list[Record]]) -> list[str]:
    """Every flow-run id the store records name, in first-seen order."""
    seen: dict[str, None] = {}
    for records in sections.values():
        for record in records:
            run = record.get("flow_run_id")
            if isinstance(run, str) and run:
                seen.setdefault(run, None)
    return list(seen)
