"""The probe's lease: which probe flow run may feed the outage state machine now.

One row per lease name (one probe per store: ``probe``). Runs overlap on purpose at
each hand-over (the next period's run starts while the old one still probes, so a
late start leaves no hole); the row names the one run that records. What a run may do
with the row is decided by the pure rules of :mod:`ppo_dr.probe.lease`; the store only
reads the row locked, hands it to that decision and writes what comes back, in one
transaction (SQLite: ``BEGIN IMMEDIATE``; PostgreSQL: ``SELECT ... FOR UPDATE``, and
``INSERT ... ON CONFLICT DO NOTHING`` for the first claim, since no row is there to
lock yet), so two runs deciding at once are serialised.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Boolean, String, select
from sqlalchemy.orm import Mapped, mapped_column

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_text, utc
from ppo_dr.store.schema import ID_LEN, RUN_ID_LEN, Base


class ProbeLeaseRow(Base):
    __tablename__ = "probe_lease"

    name: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    holder: Mapped[str] = mapped_column(String(RUN_ID_LEN))
    rank: Mapped[datetime]
    taken_at: Mapped[datetime]
    renewed_at: Mapped[datetime]
    released: Mapped[bool] = mapped_column(Boolean)
    previous: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))
    previous_renewed_at: Mapped[datetime | None]
    previous_released: Mapped[bool] = mapped_column(Boolean)


@dataclass(frozen=True)
class ProbeLease:
    """Who records the probe's checks, and the hand-over from whom.

    ``rank`` orders runs (the holder's scheduled start: a later schedule slot
    outranks an earlier one); ``renewed_at`` is the holder's last cycle; ``released``:
    the holder stopped on its own (the next run takes over at once). ``previous`` is
    the run the holder took over from, ``previous_renewed_at`` that run's last renewal
    (bounds the wait for it), ``previous_released``: it has finished its last cycle.
    """

    name: str
    holder: str
    rank: datetime
    taken_at: datetime
    renewed_at: datetime
    released: bool = False
    previous: str | None = None
    previous_renewed_at: datetime | None = None
    previous_released: bool = False


LeaseChange = Callable[[ProbeLease | None], ProbeLease | None]


def _checked(lease: ProbeLease, name: str) -> ProbeLease:
    """*lease* with its times in UTC; PermanentError for a malformed one."""
    if lease.name != name:
        raise PermanentError(f"lease change renamed {name!r} to {lease.name!r}")
    check_text(lease.holder, "lease holder", RUN_ID_LEN)
    if lease.previous is not None:
        check_text(lease.previous, "previous lease holder", RUN_ID_LEN)
    previous_at = lease.previous_renewed_at
    return dataclasses.replace(
        lease,
        rank=utc(lease.rank, "lease rank"),
        taken_at=utc(lease.taken_at, "lease taken at"),
        renewed_at=utc(lease.renewed_at, "lease renewed at"),
        previous_renewed_at=None if previous_at is None else utc(previous_at, "previous renewal"),
    )


class ProbeLeaseMixin(StoreBase):
    def probe_lease(self, name: str) -> ProbeLease | None:
        """The lease *name* as stored, or None if no run ever took it."""
        key = check_id(name, "lease name")
        found = self._records(ProbeLease, select(ProbeLeaseRow).where(ProbeLeaseRow.name == key))
        return found[0] if found else None

    def change_probe_lease(self, name: str, change: LeaseChange) -> ProbeLease | None:
        """Read lease *name* locked, write what *change* returns (None: leave it); the
        lease as stored afterwards. *change* must not do I/O: it runs inside the lock."""
        key = check_id(name, "lease name")
        with self._tx(write=True) as session:
            row = session.get(ProbeLeaseRow, key, with_for_update=True)
            if row is None:
                wanted = change(None)
                if wanted is None:
                    return None
                new = _checked(wanted, key)
                values = dataclasses.asdict(new)
                if self._insert_or_find(session, ProbeLeaseRow, values, ["name"])[1]:
                    return new
                # Another run created it meanwhile: PostgreSQL locks no row that is not
                # there yet. Decide again on the row it wrote, locked now.
                row = session.get(ProbeLeaseRow, key, with_for_update=True, populate_existing=True)
                if row is None:
                    raise PermanentError(f"probe lease {key!r}: created and gone at once")
            current = to_record(ProbeLease, row)
            wanted = change(current)
            if wanted is None or wanted == current:
                return current
            new = _checked(wanted, key)
            for field_name, value in dataclasses.asdict(new).items():
                setattr(row, field_name, value)
            return new
