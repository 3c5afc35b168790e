"""Drained servers: app servers emptied for a hardware upgrade, that take no client.

``ppo-dr server drain`` marks a server drained before its clients move off, so no
rebalance (nor a second drain) plans clients onto it meanwhile; ``ppo-dr server return``
clears the mark. One row per drained server: who drained it, why, when, and the
maintenance window the drain opened (closed again on return).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Integer, String, Text, select
from sqlalchemy.orm import Mapped, mapped_column

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_text, utc
from ppo_dr.store.schema import ID_LEN, RUN_ID_LEN, TARGET_LEN, Base

_REASON_LEN = 2000


class DrainedRow(Base):
    __tablename__ = "drained_servers"

    server_id: Mapped[str] = mapped_column(String(ID_LEN), primary_key=True)
    drained_at: Mapped[datetime]
    drained_by: Mapped[str] = mapped_column(String(TARGET_LEN))
    reason: Mapped[str] = mapped_column(Text, server_default="")
    maintenance_id: Mapped[int | None] = mapped_column(Integer)
    flow_run_id: Mapped[str | None] = mapped_column(String(RUN_ID_LEN))


@dataclass(frozen=True)
class DrainedServer:
    """A server marked drained: it takes no client until it is returned."""

    server_id: str
    drained_at: datetime
    drained_by: str
    reason: str
    maintenance_id: int | None
    flow_run_id: str | None


class DrainedMixin(StoreBase):
    def mark_drained(
        self,
        server_id: str,
        *,
        by: str,
        reason: str = "",
        maintenance_id: int | None = None,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> DrainedServer:
        """Mark *server_id* drained; marking it again keeps the first mark (returned)."""
        sid = check_id(server_id, "server id")
        by = check_text(by, "drained by", TARGET_LEN)
        reason = check_text(reason, "reason", _REASON_LEN, empty_ok=True)
        if maintenance_id is not None and (
            isinstance(maintenance_id, bool) or not isinstance(maintenance_id, int)
        ):
            raise PermanentError(f"maintenance id must be an int, got {maintenance_id!r}")
        run = None if flow_run_id is None else check_text(flow_run_id, "flow run id", RUN_ID_LEN)
        with self._tx(write=True) as session:
            row = session.get(DrainedRow, sid, with_for_update=True)
            if row is None:
                row = self._added(
                    session,
                    DrainedRow(
                        server_id=sid,
                        drained_at=utc(at, "drained at"),
                        drained_by=by,
                        reason=reason,
                        maintenance_id=maintenance_id,
                        flow_run_id=run,
                    ),
                )
            return to_record(DrainedServer, row)

    def clear_drained(self, server_id: str) -> DrainedServer | None:
        """Clear the mark (the server takes clients again); the mark it had, or None."""
        sid = check_id(server_id, "server id")
        with self._tx(write=True) as session:
            row = session.get(DrainedRow, sid, with_for_update=True)
            if row is None:
                return None
            record = to_record(DrainedServer, row)
            session.delete(row)
            return record

    def drained_servers(self) -> list[DrainedServer]:
        """Every server marked drained, by id."""
        return self._records(DrainedServer, select(DrainedRow).order_by(DrainedRow.server_id))
