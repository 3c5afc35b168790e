"""The tables, as typed SQLAlchemy ORM classes.

This module *describes* the schema for queries; it never creates it. The schema is
created and changed only by the Alembic migrations in ``ppo_dr/migrations`` (a test
checks that the two agree). Column names match the fields of :mod:`ppo_dr.store.records`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

from ppo_dr.store.records import (
    FAILOVER_MODES,
    FAILOVER_STATES,
    INCIDENT_STATES,
    MAINTENANCE_SCOPES,
    NOTICE_STATUSES,
    SNAPSHOT_STATUSES,
    STEP_STATES,
)

ID_LEN = 63  # fleet ids: ppo_dr.ids.ID_PATTERN
RUN_ID_LEN = 100  # Prefect flow run ids are UUIDs; room to spare
TARGET_LEN = 200
KEY_LEN = 300
PLAN_ID_LEN = 64
STEP_LEN = 32

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class UTCDateTime(TypeDecorator[datetime]):
    """Aware datetimes in, aware UTC datetimes out, on every backend.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are stored as
    naive UTC text (fixed width, so text order is time order) and marked UTC on the way
    out. A naive datetime is refused: it would silently mean "local time somewhere".
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()} refused: pass an aware UTC time")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


JSON_TYPE: TypeEngine[Any] = JSON().with_variant(JSONB(), "postgresql")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        dict[str, Any]: JSON_TYPE,
    }


class PlacementRow(Base):
    __tablename__ = "placements"
    __table_args__ = (CheckConstraint("version >= 1", name="version_positive"),)

    client_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    server_id: Mapped[str] = mapped_column(String(ID_LEN))
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    reason: Mapped[str] = mapped_column(Text, server_default="")


class PlacementHistoryRow(Base):
    __tablename__ = "placement_history"
    __table_args__ = (UniqueConstraint("client_id", "version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(ID_LEN), ForeignKey("placements.client_id"))
    from_server: Mapped[str | None] = mapped_column(String(ID_LEN))
    to_server: Mapped[str] = mapped_column(String(ID_LEN))
    version: Mapped[int] = mapped_column(Integer)
    at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    reason: Mapped[str] = mapped_column(Text, server_default="")


class IncidentRow(Base):
    __tablename__ = "incidents"
    __table_args__ = (
        CheckConstraint(_in("state", INCIDENT_STATES), name="state"),
        # At most one unresolved incident per dedupe key, even with racing writers.
        Index(
            "uq_incidents_open_dedupe_key",
            "dedupe_key",
            unique=True,
            sqlite_where=text("state != 'resolved'"),
            postgresql_where=text("state != 'resolved'"),
        ),
        Index(None, "state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    dedupe_key: Mapped[str] = mapped_column(String(KEY_LEN))
    state: Mapped[str] = mapped_column(String(16))
    title: Mapped[str] = mapped_column(Text)
    scope: Mapped[dict[str, Any]]
    severity: Mapped[str] = mapped_column(String(32))
    paging: Mapped[bool]
    opened_at: Mapped[datetime]
    acknowledged_at: Mapped[datetime | None]
    acknowledged_by: Mapped[str | None] = mapped_column(String(TARGET_LEN))
    recovered_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(String(TARGET_LEN))
    cause: Mapped[str | None] = mapped_column(Text)
    measures: Mapped[str | None] = mapped_column(Text)
    prevention: Mapped[str | None] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))


class TimelineRow(Base):
    __tablename__ = "timeline"
    __table_args__ = (Index(None, "incident_id", "at", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    incident_id: Mapped[int] = mapped_column(ForeignKey("incidents.id"))
    at: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    data: Mapped[dict[str, Any]]


class NoticeRow(Base):
    __tablename__ = "notices"
    __table_args__ = (
        CheckConstraint(_in("status", NOTICE_STATUSES), name="status"),
        Index(None, "incident_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(String(KEY_LEN), unique=True)
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    step: Mapped[str] = mapped_column(String(64))
    channel: Mapped[str] = mapped_column(String(32))
    recipient: Mapped[str] = mapped_column(String(KEY_LEN))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    receipt: Mapped[str | None] = mapped_column(String(KEY_LEN))
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


class ProbeTransitionRow(Base):
    __tablename__ = "probe_transitions"
    __table_args__ = (Index(None, "target", "at"), Index(None, "at"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    target: Mapped[str] = mapped_column(String(TARGET_LEN))
    from_state: Mapped[str] = mapped_column(String(32))
    to_state: Mapped[str] = mapped_column(String(32))
    at: Mapped[datetime]
    detail: Mapped[str] = mapped_column(Text)


class ProbeMinuteRow(Base):
    __tablename__ = "probe_minutes"

    target: Mapped[str] = mapped_column(String(TARGET_LEN), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    checks: Mapped[int] = mapped_column(Integer)
    failures: Mapped[int] = mapped_column(Integer)
    latency_ms_max: Mapped[float | None] = mapped_column(Float)


class MaintenanceRow(Base):
    __tablename__ = "maintenance_windows"
    __table_args__ = (
        CheckConstraint(_in("scope_kind", MAINTENANCE_SCOPES), name="scope_kind"),
        Index(None, "starts_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    scope_kind: Mapped[str] = mapped_column(String(16))
    scope_id: Mapped[str] = mapped_column(String(ID_LEN))
    starts_at: Mapped[datetime]
    ends_at: Mapped[datetime | None]
    reason: Mapped[str] = mapped_column(Text)
    created_by: Mapped[str] = mapped_column(String(TARGET_LEN))


class SnapshotRow(Base):
    __tablename__ = "snapshots"
    __table_args__ = (
        UniqueConstraint("mirror_id", "client_id", "snapshot_id"),
        CheckConstraint(_in("status", SNAPSHOT_STATUSES), name="status"),
        Index(None, "client_id", "mirror_id", "taken_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    server_id: Mapped[str] = mapped_column(String(ID_LEN))
    client_id: Mapped[str] = mapped_column(String(ID_LEN))
    mirror_id: Mapped[str] = mapped_column(String(ID_LEN))
    snapshot_id: Mapped[str] = mapped_column(String(128))
    taken_at: Mapped[datetime]
    files: Mapped[int] = mapped_column(BigInteger)
    bytes: Mapped[int] = mapped_column(BigInteger)
    new_bytes: Mapped[int] = mapped_column(BigInteger)
    verified_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16))
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    root_sha256: Mapped[str | None] = mapped_column(String(64))
    run_seconds: Mapped[float | None] = mapped_column(Float)


class DrillRow(Base):
    __tablename__ = "drills"
    __table_args__ = (Index(None, "client_id", "started_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(String(ID_LEN))
    mirror_id: Mapped[str] = mapped_column(String(ID_LEN))
    snapshot_id: Mapped[str] = mapped_column(String(128))
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime]
    ok: Mapped[bool]
    restore_seconds: Mapped[float] = mapped_column(Float)
    snapshot_age_seconds: Mapped[float] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text)
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))


class FailoverRow(Base):
    __tablename__ = "failovers"
    __table_args__ = (
        CheckConstraint(_in("mode", FAILOVER_MODES), name="mode"),
        CheckConstraint(_in("state", FAILOVER_STATES), name="state"),
        Index(None, "incident_id"),
    )

    plan_id: Mapped[str] = mapped_column(String(PLAN_ID_LEN), primary_key=True)
    mode: Mapped[str] = mapped_column(String(16))
    incident_id: Mapped[int | None] = mapped_column(ForeignKey("incidents.id"))
    plan: Mapped[dict[str, Any]]
    placement_versions: Mapped[dict[str, Any]]
    state: Mapped[str] = mapped_column(String(16))
    declared_at: Mapped[datetime]
    started_at: Mapped[datetime]
    finished_at: Mapped[datetime | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    detail: Mapped[str] = mapped_column(Text, server_default="")


class FailoverStepRow(Base):
    __tablename__ = "failover_steps"
    __table_args__ = (
        UniqueConstraint("plan_id", "client_id", "step"),
        CheckConstraint(_in("state", STEP_STATES), name="state"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    plan_id: Mapped[str] = mapped_column(String(PLAN_ID_LEN), ForeignKey("failovers.plan_id"))
    client_id: Mapped[str] = mapped_column(String(ID_LEN))
    step: Mapped[str] = mapped_column(String(STEP_LEN))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text, server_default="")
    data: Mapped[dict[str, Any]]
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))


class FailoverResultRow(Base):
    __tablename__ = "failover_results"

    plan_id: Mapped[str] = mapped_column(
        String(PLAN_ID_LEN), ForeignKey("failovers.plan_id"), primary_key=True
    )
    client_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    from_server: Mapped[str] = mapped_column(String(ID_LEN))
    to_server: Mapped[str] = mapped_column(String(ID_LEN))
    source_mirror: Mapped[str | None] = mapped_column(String(ID_LEN))
    snapshot_id: Mapped[str | None] = mapped_column(String(128))
    outcome: Mapped[str] = mapped_column(String(16))
    rto_seconds: Mapped[float | None] = mapped_column(Float)
    rpo_seconds: Mapped[float | None] = mapped_column(Float)
    lost_writes: Mapped[int | None] = mapped_column(Integer)
    restored_bytes: Mapped[int | None] = mapped_column(BigInteger)
    restored_files: Mapped[int | None] = mapped_column(BigInteger)
    restore_seconds: Mapped[float | None] = mapped_column(Float)
    detail: Mapped[str] = mapped_column(Text, server_default="")
    updated_at: Mapped[datetime]
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
