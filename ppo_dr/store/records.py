"""What the store hands back: plain frozen dataclasses, never ORM rows bound to a session.

Every datetime is timezone-aware UTC. Field names match the columns of the table the
record comes from (see :mod:`ppo_dr.store.schema`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

INCIDENT_STATES: Final = ("open", "acknowledged", "recovered", "resolved")
NOTICE_STATUSES: Final = ("pending", "sent", "failed", "skipped")
SNAPSHOT_STATUSES: Final = ("complete", "missing", "damaged")
MAINTENANCE_SCOPES: Final = ("server", "dc", "client")
FAILOVER_MODES: Final = ("emergency", "planned")
FAILOVER_STATES: Final = ("running", "done", "partial", "failed")
STEP_STATES: Final = ("pending", "running", "done", "failed", "rolled-back")


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a client lives now; ``version`` grows by one with every move (compare-and-set)."""

    client_id: str
    server_id: str
    version: int
    updated_at: datetime
    flow_run_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class PlacementMove:
    """One change of a client's home; the seed row has ``from_server=None`` and version 1."""

    id: int
    client_id: str
    from_server: str | None
    to_server: str
    version: int
    at: datetime
    flow_run_id: str | None
    reason: str


@dataclass(frozen=True, slots=True)
class Incident:
    """An outage or other trouble, from opening to resolution, with its post-mortem fields."""

    id: int
    kind: str
    dedupe_key: str
    state: str
    title: str
    scope: dict[str, Any]
    severity: str
    paging: bool
    opened_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    recovered_at: datetime | None
    resolved_at: datetime | None
    resolved_by: str | None
    cause: str | None
    measures: str | None
    prevention: str | None
    flow_run_id: str | None

    @property
    def is_open(self) -> bool:
        """True until the incident is resolved."""
        return self.state != "resolved"


@dataclass(frozen=True, slots=True)
class TimelineEntry:
    """One line of an incident's timeline, joined to Prefect by ``flow_run_id``."""

    id: int
    incident_id: int
    at: datetime
    kind: str
    message: str
    flow_run_id: str | None
    data: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Notice:
    """A message to a person or the public, recorded before it is sent (idempotency key)."""

    id: int
    idempotency_key: str
    incident_id: int | None
    step: str
    channel: str
    recipient: str
    subject: str
    body: str = field(repr=False)  # message text stays out of logs and tracebacks
    status: str
    attempts: int
    receipt: str | None
    error: str | None
    created_at: datetime
    sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class ProbeTransition:
    """A change of a probe target's outage state (up, suspect, down, recovering)."""

    id: int
    target: str
    from_state: str
    to_state: str
    at: datetime
    detail: str


@dataclass(frozen=True, slots=True)
class ProbeMinute:
    """Probe counts for one target in one UTC minute: the raw material of SLA reports."""

    target: str
    minute: datetime
    checks: int
    failures: int
    latency_ms_max: float | None


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Planned work on a server, data centre or client; open-ended while ``ends_at`` is None."""

    id: int
    scope_kind: str
    scope_id: str
    starts_at: datetime
    ends_at: datetime | None
    reason: str
    created_by: str

    def is_active(self, at: datetime) -> bool:
        """True if *at* falls inside the window (start inclusive, end exclusive)."""
        return self.starts_at <= at and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One client's snapshot on one mirror, and what verification last found."""

    id: int
    server_id: str
    client_id: str
    mirror_id: str
    snapshot_id: str
    taken_at: datetime
    files: int
    bytes: int
    new_bytes: int
    verified_at: datetime | None
    status: str
    flow_run_id: str | None
    root_sha256: str | None = None  # sha256 of the snapshot's root object as stored
    run_seconds: float | None = None  # how long the mirror run that wrote it took


@dataclass(frozen=True, slots=True)
class Drill:
    """A DR drill: one client restored from one mirror snapshot, how long and how fresh."""

    id: int
    client_id: str
    mirror_id: str
    snapshot_id: str
    started_at: datetime
    finished_at: datetime
    ok: bool
    restore_seconds: float
    snapshot_age_seconds: float
    detail: str
    flow_run_id: str | None


@dataclass(frozen=True, slots=True)
class Failover:
    """One failover or planned migration, keyed by its plan's id (a rerun finds it again).

    ``placement_versions`` are the placement versions read when the run first began:
    the switch compares against them, so a rerun can never move a client someone else
    moved meanwhile.
    """

    plan_id: str
    mode: str
    incident_id: int | None
    plan: dict[str, Any]
    placement_versions: dict[str, Any]
    state: str
    declared_at: datetime
    started_at: datetime
    finished_at: datetime | None
    flow_run_id: str | None
    detail: str


@dataclass(frozen=True, slots=True)
class FailoverStep:
    """One step of one client in a failover; ``attempts`` counts how often it began."""

    id: int
    plan_id: str
    client_id: str
    step: str
    state: str
    attempts: int
    detail: str
    data: dict[str, Any]
    started_at: datetime | None
    finished_at: datetime | None
    flow_run_id: str | None

    @property
    def done(self) -> bool:
        """True when the step completed in an earlier attempt: skip it."""
        return self.state == "done"


@dataclass(frozen=True, slots=True)
class FailoverResult:
    """What a failover did for one client: where from and to, and the RTO/RPO evidence.

    ``rto_seconds`` = declaration to healthy through the front door; ``rpo_seconds`` =
    age of the restored snapshot at declaration; ``lost_writes`` = acknowledged writes
    missing from the restored journal (measured in the lab only, else None).
    """

    plan_id: str
    client_id: str
    from_server: str
    to_server: str
    source_mirror: str | None
    snapshot_id: str | None
    outcome: str
    rto_seconds: float | None
    rpo_seconds: float | None
    lost_writes: int | None
    restored_bytes: int | None
    restored_files: int | None
    restore_seconds: float | None
    detail: str
    updated_at: datetime
    flow_run_id: str | None
