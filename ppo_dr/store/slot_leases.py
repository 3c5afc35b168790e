"""Concurrency-slot leases as their holders recorded them, so the next run that wants
a slot can give back the lease of a holder that is gone (:mod:`ppo_dr.slot_holders`
has the rule, ``tasks.slots`` the Prefect side).

A row lives from just after the Prefect server granted the lease until its holder
released it; a row whose holder died stays until a run asking for the same limit
frees the lease and forgets the row.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import String, delete, select
from sqlalchemy.orm import Mapped, mapped_column

from ppo_dr.slot_holders import Holder, RecordedLease
from ppo_dr.store.base import StoreBase
from ppo_dr.store.checks import check_text
from ppo_dr.store.schema import RUN_ID_LEN, Base

#: Lease ids are UUIDs; limit names are ``mirror-server-<id>`` and the like.
LEASE_ID_LEN = 36
LIMIT_LEN = 100


class SlotLeaseRow(Base):
    __tablename__ = "slot_leases"

    lease_id: Mapped[str] = mapped_column(String(LEASE_ID_LEN), primary_key=True)
    limit_name: Mapped[str] = mapped_column(String(LIMIT_LEN), index=True)
    holder_run: Mapped[str] = mapped_column(String(RUN_ID_LEN))
    holder_token: Mapped[str] = mapped_column(String(RUN_ID_LEN))
    taken_at: Mapped[datetime]


class SlotLeasesMixin(StoreBase):
    def record_slot_lease(self, lease: RecordedLease) -> None:
        """Remember that *lease.holder* holds *lease.lease_id* of *lease.limit*."""
        row = SlotLeaseRow(
            lease_id=check_text(lease.lease_id, "lease id", LEASE_ID_LEN),
            limit_name=check_text(lease.limit, "limit name", LIMIT_LEN),
            holder_run=check_text(lease.holder.run_id, "holder run", RUN_ID_LEN),
            holder_token=check_text(lease.holder.token, "holder token", RUN_ID_LEN),
            taken_at=datetime.now(UTC),
        )
        with self._tx(write=True) as session:
            if session.get(SlotLeaseRow, row.lease_id) is None:  # a retried write: kept
                session.add(row)

    def forget_slot_lease(self, lease_id: str) -> None:
        """Drop the record of *lease_id* (released, or freed as dead); absent is fine."""
        with self._tx(write=True) as session:
            session.execute(delete(SlotLeaseRow).where(SlotLeaseRow.lease_id == lease_id))

    def slot_leases(self, limit: str) -> list[RecordedLease]:
        """Every recorded lease of *limit*, oldest first."""
        query = (
            select(SlotLeaseRow)
            .where(SlotLeaseRow.limit_name == limit)
            .order_by(SlotLeaseRow.taken_at, SlotLeaseRow.lease_id)
        )
        with self._tx(write=False) as session:
            return [
                RecordedLease(r.lease_id, r.limit_name, Holder(r.holder_run, r.holder_token))
                for r in session.scalars(query)
            ]
