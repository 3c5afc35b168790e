"""Concurrency-slot leases as their holders recorded them: a dead holder's slot is
given back by the next run that wants it, not a lease later.

Revision ID: 0007_chaos10
Revises: 0006_probe10
Create Date: 2026-12-05

Written by hand and frozen: it never imports ``ppo_dr/store/slot_leases.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_chaos10"
down_revision: str | Sequence[str] | None = "0006_probe10"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slot_leases",
        sa.Column("lease_id", sa.String(36), nullable=False),
        sa.Column("limit_name", sa.String(100), nullable=False),
        sa.Column("holder_run", sa.String(100), nullable=False),
        sa.Column("holder_token", sa.String(100), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("lease_id", name="pk_slot_leases"),
    )
    op.create_index("ix_slot_leases_limit_name", "slot_leases", ["limit_name"])


def downgrade() -> None:
    op.drop_index("ix_slot_leases_limit_name", table_name="slot_leases")
    op.drop_table("slot_leases")
