"""The failover ledger: one row per failover run (by plan id), its steps per client,
and per-client results (RTO, RPO, acknowledged writes lost, restored bytes).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30

Written by hand and frozen, like 0001: it never imports ``ppo_dr/store/schema.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(63)
RUN_ID = sa.String(100)
PLAN_ID = sa.String(64)


def _ts(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str) -> sa.Column[Any]:
    return sa.Column(name, sa.JSON().with_variant(postgresql.JSONB(), "postgresql"), nullable=False)


def upgrade() -> None:
    op.create_table(
        "failovers",
        sa.Column("plan_id", PLAN_ID, nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("incident_id", sa.Integer(), nullable=True),
        _json("plan"),
        _json("placement_versions"),
        sa.Column("state", sa.String(16), nullable=False),
        _ts("declared_at"),
        _ts("started_at"),
        _ts("finished_at", nullable=True),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        sa.CheckConstraint("mode IN ('emergency', 'planned')", name="ck_failovers_mode"),
        sa.CheckConstraint(
            "state IN ('running', 'done', 'partial', 'failed')", name="ck_failovers_state"
        ),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name="fk_failovers_incident_id_incidents"
        ),
        sa.PrimaryKeyConstraint("plan_id", name="pk_failovers"),
    )
    op.create_index("ix_failovers_incident_id", "failovers", ["incident_id"])
    op.create_table(
        "failover_steps",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("plan_id", PLAN_ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        _json("data"),
        _ts("started_at", nullable=True),
        _ts("finished_at", nullable=True),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'running', 'done', 'failed', 'rolled-back')",
            name="ck_failover_steps_state",
        ),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["failovers.plan_id"], name="fk_failover_steps_plan_id_failovers"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_failover_steps"),
        sa.UniqueConstraint(
            "plan_id", "client_id", "step", name="uq_failover_steps_plan_id_client_id_step"
        ),
    )
    op.create_table(
        "failover_results",
        sa.Column("plan_id", PLAN_ID, nullable=False),
        sa.Column("client_id", ID, nullable=False),
        sa.Column("from_server", ID, nullable=False),
        sa.Column("to_server", ID, nullable=False),
        sa.Column("source_mirror", ID, nullable=True),
        sa.Column("snapshot_id", sa.String(128), nullable=True),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("rto_seconds", sa.Float(), nullable=True),
        sa.Column("rpo_seconds", sa.Float(), nullable=True),
        sa.Column("lost_writes", sa.Integer(), nullable=True),
        sa.Column("restored_bytes", sa.BigInteger(), nullable=True),
        sa.Column("restored_files", sa.BigInteger(), nullable=True),
        sa.Column("restore_seconds", sa.Float(), nullable=True),
        sa.Column("detail", sa.Text(), server_default="", nullable=False),
        _ts("updated_at"),
        sa.Column("flow_run_id", RUN_ID, nullable=True),
        sa.ForeignKeyConstraint(
            ["plan_id"], ["failovers.plan_id"], name="fk_failover_results_plan_id_failovers"
        ),
        sa.PrimaryKeyConstraint("plan_id", "client_id", name="pk_failover_results"),
    )


def downgrade() -> None:
    for table in ("failover_results", "failover_steps", "failovers"):
        op.drop_table(table)
