"""Snapshot catalogue: the hash of each snapshot's stored root object, and how long the
mirror run that wrote it took (evidence bundles and the fleet/SLA report read them).

Revision ID: 0004_finish1213
Revises: 0003_rebalance13
Create Date: 2026-12-04

Written by hand and frozen: it never imports ``ppo_dr/store/catalogue.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_finish1213"
down_revision: str | Sequence[str] | None = "0003_rebalance13"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.add_column(sa.Column("root_sha256", sa.String(64), nullable=True))
        batch.add_column(sa.Column("run_seconds", sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("snapshots") as batch:
        batch.drop_column("run_seconds")
        batch.drop_column("root_sha256")
