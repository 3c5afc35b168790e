"""Placements: which server each client lives on, changed only by compare-and-set."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from ppo_dr.errors import PermanentError, PlacementConflict
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_run_id, check_text, utc
from ppo_dr.store.records import Placement, PlacementMove
from ppo_dr.store.schema import PlacementHistoryRow, PlacementRow

_SEED_CHUNK: Final = 500
_REASON_LEN: Final = 2000


class PlacementsMixin(StoreBase):
    def seed_placements(
        self, homes: Mapping[str, str], *, at: datetime | None = None, reason: str = "seed"
    ) -> int:
        """Record the home server of every client not placed yet; returns how many were new.

        Clients already placed keep their placement (the store, not fleet.yaml, says where
        a client is once it has moved). Each new placement starts at version 1 and gets a
        history row with ``from_server=None``. Safe to run repeatedly and concurrently.
        """
        wanted = {
            check_id(client, "client id"): check_id(server, "server id")
            for client, server in homes.items()
        }
        when = utc(at, "seed time")
        reason = check_text(reason, "reason", _REASON_LEN, empty_ok=True)
        if not wanted:
            return 0
        inserted = 0
        items = sorted(wanted.items())
        with self._tx(write=True) as session:
            for start in range(0, len(items), _SEED_CHUNK):
                chunk = items[start : start + _SEED_CHUNK]
                rows = [
                    {
                        "client_id": client,
                        "server_id": server,
                        "version": 1,
                        "updated_at": when,
                        "flow_run_id": None,
                        "reason": reason,
                    }
                    for client, server in chunk
                ]
                stmt = (
                    self._insert(session)(PlacementRow)
                    .values(rows)
                    .on_conflict_do_nothing(index_elements=["client_id"])
                    .returning(PlacementRow.client_id)
                )
                new = set(session.scalars(stmt))
                for client, server in chunk:
                    if client in new:
                        session.add(
                            PlacementHistoryRow(
                                client_id=client,
                                from_server=None,
                                to_server=server,
                                version=1,
                                at=when,
                                flow_run_id=None,
                                reason=reason,
                            )
                        )
                inserted += len(new)
        return inserted

    def placement(self, client_id: str) -> Placement | None:
        """Where *client_id* lives now, or None if it was never placed."""
        client = check_id(client_id, "client id")
        with self._tx(write=False) as session:
            row = session.get(PlacementRow, client)
            return None if row is None else to_record(Placement, row)

    def placements(self) -> list[Placement]:
        """Every placement, ordered by client id."""
        with self._tx(write=False) as session:
            rows = session.scalars(select(PlacementRow).order_by(PlacementRow.client_id))
            return [to_record(Placement, row) for row in rows]

    def move_client(
        self,
        client_id: str,
        to_server: str,
        expected_version: int,
        *,
        flow_run_id: str | None = None,
        reason: str = "",
        at: datetime | None = None,
    ) -> Placement:
        """Move *client_id* to *to_server* if its placement is still at *expected_version*.

        A compare-and-set: one ``UPDATE ... WHERE client_id = ? AND version = ?``; if no
        row matched, another run moved the client first and :class:`PlacementConflict`
        says which version it found (re-plan; do not retry). The move and its history
        row are one transaction.

        A retry of a move that already committed (same *flow_run_id*, client already on
        *to_server* at ``expected_version + 1``) returns the placement instead of failing.
        """
        client = check_id(client_id, "client id")
        server = check_id(to_server, "server id")
        if isinstance(expected_version, bool) or not isinstance(expected_version, int):
            raise PermanentError(f"expected_version must be an int, got {expected_version!r}")
        run_id = check_run_id(flow_run_id)
        reason = check_text(reason, "reason", _REASON_LEN, empty_ok=True)
        when = utc(at, "move time")
        with self._tx(write=True) as session:
            current = self._placement_now(session, client)
            if current is None or current.version != expected_version:
                return self._conflict_or_retry(current, client, server, expected_version, run_id)
            result: Any = session.execute(
                update(PlacementRow)
                .where(PlacementRow.client_id == client, PlacementRow.version == expected_version)
                .values(
                    server_id=server,
                    version=expected_version + 1,
                    updated_at=when,
                    flow_run_id=run_id,
                    reason=reason,
                )
                .execution_options(synchronize_session=False)
            )
            if result.rowcount != 1:
                actual = self._placement_now(session, client)
                return self._conflict_or_retry(actual, client, server, expected_version, run_id)
            session.add(
                PlacementHistoryRow(
                    client_id=client,
                    from_server=current.server_id,
                    to_server=server,
                    version=expected_version + 1,
                    at=when,
                    flow_run_id=run_id,
                    reason=reason,
                )
            )
        return Placement(client, server, expected_version + 1, when, run_id, reason)

    def placement_history(self, client_id: str) -> list[PlacementMove]:
        """Every placement *client_id* has had, oldest first (the seed, then each move)."""
        client = check_id(client_id, "client id")
        return self._records(
            PlacementMove,
            select(PlacementHistoryRow)
            .where(PlacementHistoryRow.client_id == client)
            .order_by(PlacementHistoryRow.version, PlacementHistoryRow.id),
        )

    @staticmethod
    def _placement_now(session: Session, client: str) -> Placement | None:
        # Column select, not the identity map: always the row as the database has it now.
        row = session.execute(
            select(
                PlacementRow.client_id,
                PlacementRow.server_id,
                PlacementRow.version,
                PlacementRow.updated_at,
                PlacementRow.flow_run_id,
                PlacementRow.reason,
            ).where(PlacementRow.client_id == client)
        ).one_or_none()
        return None if row is None else Placement(*row)

    @staticmethod
    def _conflict_or_retry(
        actual: Placement | None,
        client: str,
        server: str,
        expected_version: int,
        run_id: str | None,
    ) -> Placement:
        if (
            actual is not None
            and run_id is not None
            and actual.flow_run_id == run_id
            and actual.server_id == server
            and actual.version == expected_version + 1
        ):
            return actual
        raise PlacementConflict(
            client, expected_version, None if actual is None else actual.version
        )
