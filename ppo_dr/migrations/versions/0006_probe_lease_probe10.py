"""The probe's lease: which probe flow run records, so runs can overlap at hand-over.

Revision ID: 0006_probe10
Revises: 0005_rebal13
Create Date: 2026-12-04

Written by hand and frozen: it never imports ``ppo_dr/store/probe_lease.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_probe10"
down_revision: str | Sequence[str] | None = "0005_rebal13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "probe_lease",
        sa.Column("name", sa.String(63), nullable=False),
        sa.Column("holder", sa.String(100), nullable=False),
        sa.Column("rank", sa.DateTime(timezone=True), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("released", sa.Boolean(), nullable=False),
        sa.Column("previous", sa.String(100), nullable=True),
        sa.Column("previous_renewed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("previous_released", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_probe_lease"),
    )


def downgrade() -> None:
    op.drop_table("probe_lease")
