"""The snapshot catalogue (what each mirror holds, and what verification found) and drills."""

from __future__ import annotations

import math
import re
from datetime import datetime
from typing import Final

from sqlalchemy import select

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_count, check_run_id, check_text, utc
from ppo_dr.store.records import SNAPSHOT_STATUSES, Drill, Snapshot
from ppo_dr.store.schema import DrillRow, SnapshotRow

_SNAPSHOT_ID_LEN: Final = 128
_DETAIL_LEN: Final = 100_000
_SHA256: Final = re.compile(r"[0-9a-f]{64}")


class CatalogueMixin(StoreBase):
    def record_snapshot(
        self,
        *,
        server_id: str,
        client_id: str,
        mirror_id: str,
        snapshot_id: str,
        taken_at: datetime,
        files: int,
        bytes: int,  # shadows the builtin on purpose: the column is called bytes
        new_bytes: int,
        status: str = "complete",
        flow_run_id: str | None = None,
        root_sha256: str | None = None,
        run_seconds: float | None = None,
    ) -> Snapshot:
        """Record (or re-record) a snapshot, keyed by (mirror, client, snapshot id).

        *root_sha256* is the hash of the snapshot's root object as that mirror stores
        it (:func:`ppo_dr.mirror.root_hash.snapshot_root_sha256`), so evidence can name
        exactly what was restored; *run_seconds* how long the mirror run took. Re-recording
        updates sizes, status, hash and run but keeps ``verified_at``: a retried mirror
        run does not forget an earlier verification.
        """
        values = {
            "server_id": check_id(server_id, "server id"),
            "client_id": check_id(client_id, "client id"),
            "mirror_id": check_id(mirror_id, "mirror id"),
            "snapshot_id": check_text(snapshot_id, "snapshot id", _SNAPSHOT_ID_LEN),
            "taken_at": utc(taken_at, "taken_at"),
            "files": check_count(files, "files"),
            "bytes": check_count(bytes, "bytes"),
            "new_bytes": check_count(new_bytes, "new_bytes"),
            "status": _check_status(status),
            "flow_run_id": check_run_id(flow_run_id),
            "root_sha256": _check_sha256(root_sha256),
            "run_seconds": None if run_seconds is None else _seconds(run_seconds, "run_seconds"),
        }
        key = ("mirror_id", "client_id", "snapshot_id")
        with self._tx(write=True) as session:
            row = self._upsert(
                session,
                SnapshotRow,
                {"verified_at": None, **values},
                key,
                [name for name in values if name not in key],
            )
            return to_record(Snapshot, row)

    def mark_snapshot_verified(
        self, mirror_id: str, client_id: str, snapshot_id: str, at: datetime, ok: bool
    ) -> Snapshot:
        """Record a verification at *at*: ``ok`` → complete, otherwise damaged."""
        mirror = check_id(mirror_id, "mirror id")
        client = check_id(client_id, "client id")
        snap = check_text(snapshot_id, "snapshot id", _SNAPSHOT_ID_LEN)
        when = utc(at, "verification time")
        if not isinstance(ok, bool):
            raise PermanentError(f"ok must be a bool, got {ok!r}")
        with self._tx(write=True) as session:
            row = self._locked_row(
                session,
                SnapshotRow,
                SnapshotRow.mirror_id == mirror,
                SnapshotRow.client_id == client,
                SnapshotRow.snapshot_id == snap,
                missing=(
                    f"no snapshot {snap!r} of client {client!r} on mirror {mirror!r} catalogued"
                ),
            )
            row.verified_at = when
            row.status = "complete" if ok else "damaged"
            return to_record(Snapshot, row)

    def snapshots(
        self, client_id: str | None = None, mirror_id: str | None = None
    ) -> list[Snapshot]:
        """Catalogued snapshots, oldest first, optionally of one client and/or one mirror."""
        stmt = select(SnapshotRow).order_by(SnapshotRow.taken_at, SnapshotRow.id)
        if client_id is not None:
            stmt = stmt.where(SnapshotRow.client_id == check_id(client_id, "client id"))
        if mirror_id is not None:
            stmt = stmt.where(SnapshotRow.mirror_id == check_id(mirror_id, "mirror id"))
        return self._records(Snapshot, stmt)

    def latest_verified_snapshot(
        self, client_id: str, mirror_id: str | None = None
    ) -> Snapshot | None:
        """The newest snapshot of *client_id* verified complete (on *mirror_id*, or any mirror)."""
        stmt = (
            select(SnapshotRow)
            .where(
                SnapshotRow.client_id == check_id(client_id, "client id"),
                SnapshotRow.status == "complete",
                SnapshotRow.verified_at.is_not(None),
            )
            .order_by(SnapshotRow.taken_at.desc(), SnapshotRow.id.desc())
            .limit(1)
        )
        if mirror_id is not None:
            stmt = stmt.where(SnapshotRow.mirror_id == check_id(mirror_id, "mirror id"))
        with self._tx(write=False) as session:
            row = session.scalars(stmt).first()
            return None if row is None else to_record(Snapshot, row)

    # -- drills -----------------------------------------------------------------------

    def record_drill(
        self,
        *,
        client_id: str,
        mirror_id: str,
        snapshot_id: str,
        started_at: datetime,
        finished_at: datetime,
        ok: bool,
        restore_seconds: float,
        snapshot_age_seconds: float,
        detail: str = "",
        flow_run_id: str | None = None,
    ) -> Drill:
        """Record the result of one DR drill (restore of a client from a mirror snapshot)."""
        start = utc(started_at, "started_at")
        end = utc(finished_at, "finished_at")
        if end < start:
            raise PermanentError(f"drill finished ({end}) before it started ({start})")
        if not isinstance(ok, bool):
            raise PermanentError(f"ok must be a bool, got {ok!r}")
        row = DrillRow(
            client_id=check_id(client_id, "client id"),
            mirror_id=check_id(mirror_id, "mirror id"),
            snapshot_id=check_text(snapshot_id, "snapshot id", _SNAPSHOT_ID_LEN),
            started_at=start,
            finished_at=end,
            ok=ok,
            restore_seconds=_seconds(restore_seconds, "restore_seconds"),
            snapshot_age_seconds=_seconds(snapshot_age_seconds, "snapshot_age_seconds"),
            detail=check_text(detail, "detail", _DETAIL_LEN, empty_ok=True),
            flow_run_id=check_run_id(flow_run_id),
        )
        with self._tx(write=True) as session:
            return to_record(Drill, self._added(session, row))

    def drills(self, client_id: str | None = None) -> list[Drill]:
        """Drill results, oldest first, optionally of one client."""
        stmt = select(DrillRow).order_by(DrillRow.started_at, DrillRow.id)
        if client_id is not None:
            stmt = stmt.where(DrillRow.client_id == check_id(client_id, "client id"))
        return self._records(Drill, stmt)


def _check_status(status: str) -> str:
    if status not in SNAPSHOT_STATUSES:
        raise PermanentError(f"snapshot status {status!r} unknown: use one of {SNAPSHOT_STATUSES}")
    return status


def _check_sha256(value: str | None) -> str | None:
    if value is not None and not (isinstance(value, str) and _SHA256.fullmatch(value)):
        raise PermanentError(f"root_sha256 must be 64 lowercase hex digits, got {value!r}")
    return value


def _seconds(value: object, what: str) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value < 0
    ):
        raise PermanentError(f"{what} must be a non-negative number, got {value!r}")
    return float(value)
