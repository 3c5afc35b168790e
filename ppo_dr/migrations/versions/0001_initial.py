"""Initial schema: placements, incidents and timeline, notices, probe, maintenance,
snapshot catalogue, drills.

Revision ID: 0001
Revises:
Create Date: 2026-01-01

Written by hand and frozen: migrations never import the application's schema module,
so later changes to ``ppo_dr/store/schema.py`` cannot rewrite history.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(63)
RUN_ID = sa.String(100)
TARGET = sa.String(200)
KEY = sa.String(300)


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "placements",
        sa.Column("client_id", ID, nullable=False),
        sa.Column("server_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("updated_at"),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint("version >= 1", name="ck_placements_version_positive"),
        sa.PrimaryKeyConstraint("client_id", name="pk_placements"),
    )
    op.create_table(
        "placement_history",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("from_server", ID, nullable=True),
        sa.Column("to_server", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["placements.client_id"],
            name="fk_placement_history_client_id_placements",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_placement_history"),
        sa.UniqueConstraint("client_id", "version", name="uq_placement_history_client_id_version"),
    )
    op.create_table(
        "incidents",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("dedupe_key", KEY, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("title", sa.Text(), nullable=False),
        _json("scope"),
        sa.Column("severity", sa.String(32), nullable=False),
        sa.Column("paging", sa.Boolean(), nullable=False),
        _ts("opened_at"),
        _ts("acknowledged_at", nullable=True),
        sa.Column("acknowledged_by", TARGET, nullable=True),
        _ts("recovered_at", nullable=True),
        _ts("resolved_at", nullable=True),
        sa.Column("resolved_by", TARGET, nullable=True),
        sa.Column("cause", sa.Text(), nullable=True),
        sa.Column("measures", sa.Text(), nullable=True),
        sa.Column("prevention", sa.Text(), nullable=True),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.CheckConstraint(
            "state IN ('open', 'acknowledged', 'recovered', 'resolved')",
            name="ck_incidents_state",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_incidents"),
    )
    op.create_index("ix_incidents_state", "incidents", ["state"])
    # At most one unresolved incident per dedupe key: racing openers collide here.
    op.create_index(
        "uq_incidents_open_dedupe_key",
        "incidents",
        ["dedupe_key"],
        unique=True,
        sqlite_where=sa.text("state != 'resolved'"),
        postgresql_where=sa.text("state != 'resolved'"),
    )
    op.create_table(
        "timeline",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=False),
        _ts("at"),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        _json("data"),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_timeline_incident_id_incidents"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_timeline"),
    )
    op.create_index("ix_timeline_incident_id_at_id", "timeline", ["incident_id", "at", "id"])
    op.create_table(
        "notices",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("idempotency_key", KEY, nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.String(64), nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("recipient", KEY, nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("receipt", KEY, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        _ts("created_at"),
        _ts("sent_at", nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'skipped')", name="ck_notices_status"
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_notices_incident_id_incidents"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_notices"),
        sa.UniqueConstraint("idempotency_key", name="uq_notices_idempotency_key"),
    )
    op.create_index("ix_notices_incident_id", "notices", ["incident_id"])
    op.create_table(
        "probe_transitions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("target", TARGET, nullable=False),
        sa.Column("from_state", sa.String(32), nullable=False),
        sa.Column("to_state", sa.String(32), nullable=False),
        _ts("at"),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_probe_transitions"),
    )
    op.create_index("ix_probe_transitions_target_at", "probe_transitions", ["target", "at"])
    op.create_index("ix_probe_transitions_at", "probe_transitions", ["at"])
    op.create_table(
        "probe_minutes",
        sa.Column("target", TARGET, nullable=False),
        _ts("minute"),
        sa.Column("checks", sa.Integer(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("latency_ms_max", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("target", "minute", name="pk_probe_minutes"),
    )
    op.create_table(
        "maintenance_windows",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("scope_kind", sa.String(16), nullable=False),
        sa.Column("scope_id", ID, nullable=False),
        _ts("starts_at"),
        _ts("ends_at", nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_by", TARGET, nullable=False),
        sa.CheckConstraint(
            "scope_kind IN ('server', 'dc', 'client')", name="ck_maintenance_windows_scope_kind"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_maintenance_windows"),
    )
    op.create_index("ix_maintenance_windows_starts_at", "maintenance_windows", ["starts_at"])
    op.create_table(
        "snapshots",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("server_id", ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("mirror_id", ID, nullable=False),
        sa.Column("snapshot_id", sa.String(128), nullable=False),
        _ts("taken_at"),
        sa.Column("files", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("new_bytes", sa.BigInteger(), nullable=False),
        _ts("verified_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.CheckConstraint(
            "status IN ('complete', 'missing', 'damaged')", name="ck_snapshots_status"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_snapshots"),
        sa.UniqueConstraint(
            "mirror_id",
            "client_id",
            "snapshot_id",
            name="uq_snapshots_mirror_id_client_id_snapshot_id",
        ),
    )
    op.create_index(
        "ix_snapshots_client_id_mirror_id_taken_at",
        "snapshots",
        ["client_id", "mirror_id", "taken_at"],
    )
    op.create_table(
        "drills",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("mirror_id", ID, nullable=False),
        sa.Column("snapshot_id", sa.String(128), nullable=False),
        _ts("started_at"),
        _ts("finished_at"),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("restore_seconds", sa.Float(), nullable=False),
        sa.Column("snapshot_age_seconds", sa.Float(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_drills"),
    )
    op.create_index("ix_drills_client_id_started_at", "drills", ["client_id", "started_at"])


def downgrade() -> None:
    for table in (
        "drills",
        "snapshots",
        "maintenance_windows",
        "probe_minutes",
        "probe_transitions",
        "notices",
        "timeline",
        "incidents",
        "placement_history",
        "placements",
    ):
        op.drop_table(table)
