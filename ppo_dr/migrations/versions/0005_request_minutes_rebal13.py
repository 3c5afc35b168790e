"""Client load: requests per client per minute (the rebalance planner's rpm dimension).

Revision ID: 0005_rebal13
Revises: 0004_finish1213
Create Date: 2026-12-04

Written by hand and frozen: it never imports ``ppo_dr/store/requests.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_rebal13"
down_revision: str | Sequence[str] | None = "0004_finish1213"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "request_minutes",
        sa.Column("client_id", sa.String(63), nullable=False),
        sa.Column("minute", sa.DateTime(timezone=True), nullable=False),
        sa.Column("requests", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", "minute", name="pk_request_minutes"),
    )


def downgrade() -> None:
    op.drop_table("request_minutes")
