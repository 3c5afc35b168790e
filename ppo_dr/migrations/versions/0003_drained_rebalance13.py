"""Drained servers: emptied for a hardware upgrade, they take no client until returned.

Revision ID: 0003_rebalance13
Revises: 0002
Create Date: 2026-12-04

Written by hand and frozen: it never imports ``ppo_dr/store/drained.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_rebalance13"
down_revision: str | Sequence[str] | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "drained_servers",
        sa.Column("server_id", sa.String(63), nullable=False),
        sa.Column("drained_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("drained_by", sa.String(200), nullable=False),
        sa.Column("reason", sa.Text(), server_default="", nullable=False),
        sa.Column("maintenance_id", sa.Integer(), nullable=True),
        sa.Column("flow_run_id", sa.String(100), nullable=True),
        sa.PrimaryKeyConstraint("server_id", name="pk_drained_servers"),
    )


def downgrade() -> None:
    op.drop_table("drained_servers")
