"""Client load: requests per client per minute, as the front door (the lab: its
workload) counted them, so the rebalance planner can weigh servers by load.

Whoever sees every client request (the front door, an access-log shipper; in the lab
the workload, which is the users) adds its counts per client and minute; counts for
the same minute add up, so several front doors may report. The planner reads each
client's busiest minute of a recent window: capacity must hold the peak.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime

from sqlalchemy import Integer, String, func, select
from sqlalchemy.orm import Mapped, mapped_column

from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase
from ppo_dr.store.checks import check_count, utc
from ppo_dr.store.schema import ID_LEN, Base


class RequestMinuteRow(Base):
    __tablename__ = "request_minutes"

    client_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    minute: Mapped[datetime] = mapped_column(primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)


class RequestsMixin(StoreBase):
    def count_requests(self, minute: datetime, counts: Mapping[str, int]) -> int:
        """Add each client's request count for *minute* (one transaction); rows written."""
        start = utc(minute, "minute").replace(second=0, microsecond=0)
        rows = [
            {
                "client_id": check_id(c, "client id"),
                "minute": start,
                "requests": check_count(n, "requests"),
            }
            for c, n in sorted(counts.items())
        ]
        if not rows:
            return 0
        with self._tx(write=True) as session:
            table = RequestMinuteRow.__table__
            insert = self._insert(session)(table)
            upsert = insert.on_conflict_do_update(
                index_elements=["client_id", "minute"],
                set_={"requests": table.c.requests + insert.excluded.requests},
            )
            session.connection().execute(upsert, rows)
        return len(rows)

    def peak_rpm(self, since: datetime) -> dict[str, int]:
        """Each client's busiest minute from *since* on (requests in that minute)."""
        stmt = (
            select(RequestMinuteRow.client_id, func.max(RequestMinuteRow.requests))
            .where(RequestMinuteRow.minute >= utc(since, "since"))
            .group_by(RequestMinuteRow.client_id)
        )
        with self._tx(write=False) as session:
            return {client: int(peak) for client, peak in session.execute(stmt)}
