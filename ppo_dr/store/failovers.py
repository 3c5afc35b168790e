"""The failover ledger: what a failover run did, per client and step, so a rerun after a
crash skips what is done and never restores a client twice.

A failover is keyed by its plan id (a content hash of the plan): rerunning the same
plan finds the same row. Each (plan, client, step) row goes ``pending → running →
done | failed | rolled-back``; :meth:`FailoverMixin.begin_step` hands back a ``done``
step unchanged (the caller skips it) and otherwise marks it running and counts the
attempt. Per-client results carry the evidence: RTO, RPO, acknowledged writes lost.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select, update

from ppo_dr.errors import PermanentError
from ppo_dr.ids import check_id
from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import (
    check_count,
    check_incident_id,
    check_json,
    check_run_id,
    check_text,
    utc,
)
from ppo_dr.store.records import (
    FAILOVER_MODES,
    FAILOVER_STATES,
    STEP_STATES,
    Failover,
    FailoverResult,
    FailoverStep,
)
from ppo_dr.store.schema import FailoverResultRow, FailoverRow, FailoverStepRow

_PLAN_ID_LEN: Final = 64
_STEP_LEN: Final = 32
_DETAIL_LEN: Final = 100_000
_SNAPSHOT_ID_LEN: Final = 128
#: Outcomes of a client in a failover: still going, healthy on the new home, failed
#: (and rolled back), or refused by the planner.
RESULT_OUTCOMES: Final = ("running", "ok", "failed", "rolled-back", "refused")
_FINAL_STEP_STATES: Final = ("done", "failed", "rolled-back")


def check_plan_id(value: object) -> str:
    """A plan id: 12 to 64 lowercase hex digits (a content hash)."""
    if not isinstance(value, str) or not 12 <= len(value) <= _PLAN_ID_LEN:
        raise PermanentError(f"plan id must be 12 to {_PLAN_ID_LEN} hex digits, got {value!r}")
    if any(ch not in "0123456789abcdef" for ch in value):
        raise PermanentError(f"plan id must be lowercase hex digits, got {value!r}")
    return value


def check_step(value: object) -> str:
    """A step name: the id syntax (``restore``, ``final-sync``), at most 32 characters."""
    name = check_id(value, "step name")
    if len(name) > _STEP_LEN:
        raise PermanentError(f"step name {name!r} is longer than {_STEP_LEN} characters")
    return name


def _seconds(value: object, what: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise PermanentError(f"{what} must be a finite number of seconds, got {value!r}")
    if value < 0:
        raise PermanentError(f"{what} must not be negative, got {value!r}")
    return float(value)


class FailoverMixin(StoreBase):
    # -- the failover -------------------------------------------------------------------

    def begin_failover(
        self,
        plan_id: str,
        mode: str,
        plan: Mapping[str, Any] | str,
        *,
        placement_versions: Mapping[str, int] | None = None,
        incident_id: int | None = None,
        declared_at: datetime | None = None,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> tuple[Failover, bool]:
        """Record the start of failover *plan_id*, or find it again; (record, created).

        A rerun of the same plan gets the first run's row back (its declaration time and
        placement versions stand) with its state set to ``running`` again. The same id
        with a different plan is refused: a plan id names one plan.
        """
        pid = check_plan_id(plan_id)
        if mode not in FAILOVER_MODES:
            raise PermanentError(f"failover mode {mode!r} unknown: use one of {FAILOVER_MODES}")
        if isinstance(plan, str):
            try:
                plan = json.loads(plan)
            except ValueError as exc:
                raise PermanentError(f"plan of failover {pid} is not JSON: {exc}") from None
            if not isinstance(plan, dict):
                raise PermanentError(f"plan of failover {pid} must be a JSON object")
        document = check_json(plan, "failover plan")
        versions = check_json(placement_versions, "placement versions")
        for client, version in versions.items():
            check_id(client, "client id")
            if isinstance(version, bool) or not isinstance(version, int) or version < 1:
                raise PermanentError(f"placement version of {client} must be >= 1: {version!r}")
        incident = None if incident_id is None else check_incident_id(incident_id)
        run_id = check_run_id(flow_run_id)
        when = utc(at, "start time")
        declared = utc(declared_at, "declaration time") if declared_at is not None else when
        with self._tx(write=True) as session:
            self._require_incident(session, incident, f"no incident {incident}")
            row, created = self._insert_or_find(
                session,
                FailoverRow,
                {
                    "plan_id": pid,
                    "mode": mode,
                    "incident_id": incident,
                    "plan": document,
                    "placement_versions": versions,
                    "state": "running",
                    "declared_at": declared,
                    "started_at": when,
                    "finished_at": None,
                    "flow_run_id": run_id,
                    "detail": "",
                },
                ["plan_id"],
            )
            assert row is not None  # failovers are never deleted
            if not created:
                if row.plan != document or row.mode != mode:
                    raise PermanentError(
                        f"failover {pid} exists with another plan or mode: a plan id names "
                        "one plan; re-plan instead of reusing the id"
                    )
                row.state = "running"
                row.finished_at = None
            return to_record(Failover, row), created

    def failover(self, plan_id: str) -> Failover | None:
        """The failover of *plan_id*, or None."""
        pid = check_plan_id(plan_id)
        with self._tx(write=False) as session:
            row = session.get(FailoverRow, pid)
            return None if row is None else to_record(Failover, row)

    def failovers(self, *, incident_id: int | None = None, limit: int = 100) -> list[Failover]:
        """Failovers, newest first (those of *incident_id* only, if given)."""
        query = (
            select(FailoverRow)
            .order_by(FailoverRow.started_at.desc())
            .limit(check_count(limit, "limit"))
        )
        if incident_id is not None:
            query = query.where(FailoverRow.incident_id == check_incident_id(incident_id))
        return self._records(Failover, query)

    def finish_failover(
        self, plan_id: str, state: str, detail: str = "", *, at: datetime | None = None
    ) -> Failover:
        """Close failover *plan_id* as ``done``, ``partial`` or ``failed``."""
        pid = check_plan_id(plan_id)
        if state not in FAILOVER_STATES or state == "running":
            raise PermanentError(
                f"failover end state {state!r} unknown: use done, partial or failed"
            )
        detail = check_text(detail, "failover detail", _DETAIL_LEN, empty_ok=True)
        when = utc(at, "finish time")
        with self._tx(write=True) as session:
            row = session.get(FailoverRow, pid)
            if row is None:
                raise PermanentError(f"no failover {pid}")
            row.state, row.detail, row.finished_at = state, detail, when
            return to_record(Failover, row)

    # -- steps --------------------------------------------------------------------------

    def begin_step(
        self,
        plan_id: str,
        client_id: str,
        step: str,
        *,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> FailoverStep:
        """Start *step* of *client_id*, unless it is done already.

        A ``done`` step comes back unchanged: the caller skips it (``step.done``). Any
        other state (new, running after a crash, failed, rolled back) becomes
        ``running`` with one more attempt, this run's id and a fresh start time.
        """
        pid, client, name = (
            check_plan_id(plan_id),
            check_id(client_id, "client id"),
            check_step(step),
        )
        run_id = check_run_id(flow_run_id)
        when = utc(at, "step start")
        with self._tx(write=True) as session:
            if session.get(FailoverRow, pid) is None:
                raise PermanentError(f"no failover {pid}: begin_failover first")
            session.execute(
                self._insert(session)(FailoverStepRow)
                .values(
                    plan_id=pid,
                    client_id=client,
                    step=name,
                    state="pending",
                    attempts=0,
                    detail="",
                    data={},
                    started_at=None,
                    finished_at=None,
                    flow_run_id=None,
                )
                .on_conflict_do_nothing(index_elements=["plan_id", "client_id", "step"])
            )
            session.execute(
                update(FailoverStepRow)
                .where(
                    FailoverStepRow.plan_id == pid,
                    FailoverStepRow.client_id == client,
                    FailoverStepRow.step == name,
                    FailoverStepRow.state != "done",
                )
                .values(
                    state="running",
                    attempts=FailoverStepRow.attempts + 1,
                    started_at=when,
                    finished_at=None,
                    flow_run_id=run_id,
                )
                .execution_options(synchronize_session=False)
            )
            return self._step(session, pid, client, name)

    def finish_step(
        self,
        plan_id: str,
        client_id: str,
        step: str,
        state: str = "done",
        detail: str = "",
        *,
        data: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> FailoverStep:
        """End *step* of *client_id* as ``done``, ``failed`` or ``rolled-back``.

        A step already ``done`` stays done (a late duplicate cannot undo it), except that
        the rollback of its client may mark it ``rolled-back``.
        """
        pid, client, name = (
            check_plan_id(plan_id),
            check_id(client_id, "client id"),
            check_step(step),
        )
        if state not in _FINAL_STEP_STATES:
            raise PermanentError(
                f"step end state {state!r} unknown: use one of {_FINAL_STEP_STATES}"
            )
        detail = check_text(detail, "step detail", _DETAIL_LEN, empty_ok=True)
        payload = check_json(data, "step data")
        when = utc(at, "step end")
        with self._tx(write=True) as session:
            row = session.scalars(
                select(FailoverStepRow).where(
                    FailoverStepRow.plan_id == pid,
                    FailoverStepRow.client_id == client,
                    FailoverStepRow.step == name,
                )
            ).one_or_none()
            if row is None:
                raise PermanentError(f"step {name} of {client} in failover {pid} never began")
            if row.state == "done" and state == "failed":
                return to_record(FailoverStep, row)
            row.state, row.detail, row.finished_at = state, detail, when
            if payload:
                row.data = {**row.data, **payload}
            return to_record(FailoverStep, row)

    def failover_steps(self, plan_id: str, client_id: str | None = None) -> list[FailoverStep]:
        """The steps of failover *plan_id* (of one client, if given), in the order begun."""
        pid = check_plan_id(plan_id)
        query = select(FailoverStepRow).where(FailoverStepRow.plan_id == pid)
        if client_id is not None:
            query = query.where(FailoverStepRow.client_id == check_id(client_id, "client id"))
        with self._tx(write=False) as session:
            rows = session.scalars(query.order_by(FailoverStepRow.id))
            return [to_record(FailoverStep, row) for row in rows]

    @staticmethod
    def _step(session: Any, pid: str, client: str, name: str) -> FailoverStep:
        row = session.scalars(
            select(FailoverStepRow)
            .where(
                FailoverStepRow.plan_id == pid,
                FailoverStepRow.client_id == client,
                FailoverStepRow.step == name,
            )
            .execution_options(populate_existing=True)
        ).one()
        return to_record(FailoverStep, row)

    # -- results ------------------------------------------------------------------------

    def record_failover_result(
        self,
        plan_id: str,
        client_id: str,
        *,
        from_server: str,
        to_server: str,
        outcome: str,
        source_mirror: str | None = None,
        snapshot_id: str | None = None,
        rto_seconds: float | None = None,
        rpo_seconds: float | None = None,
        lost_writes: int | None = None,
        restored_bytes: int | None = None,
        restored_files: int | None = None,
        restore_seconds: float | None = None,
        detail: str = "",
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> FailoverResult:
        """Record (or update) the result of *client_id* in failover *plan_id*.

        Fields passed as None keep the value an earlier call recorded, so each step can
        add what it measured (restore: bytes, files, time; health: RTO; lab: lost writes).
        """
        pid, client = check_plan_id(plan_id), check_id(client_id, "client id")
        if outcome not in RESULT_OUTCOMES:
            raise PermanentError(
                f"failover outcome {outcome!r} unknown: use one of {RESULT_OUTCOMES}"
            )
        values: dict[str, Any] = {
            "from_server": check_id(from_server, "server id"),
            "to_server": check_id(to_server, "server id"),
            "outcome": outcome,
            "detail": check_text(detail, "result detail", _DETAIL_LEN, empty_ok=True),
            "updated_at": utc(at, "result time"),
            "flow_run_id": check_run_id(flow_run_id),
        }
        optional: dict[str, Any] = {
            "source_mirror": None
            if source_mirror is None
            else check_id(source_mirror, "mirror id"),
            "snapshot_id": None
            if snapshot_id is None
            else check_text(snapshot_id, "snapshot id", _SNAPSHOT_ID_LEN),
            "rto_seconds": _seconds(rto_seconds, "rto_seconds"),
            "rpo_seconds": _seconds(rpo_seconds, "rpo_seconds"),
            "lost_writes": None if lost_writes is None else check_count(lost_writes, "lost_writes"),
            "restored_bytes": None
            if restored_bytes is None
            else check_count(restored_bytes, "restored_bytes"),
            "restored_files": None
            if restored_files is None
            else check_count(restored_files, "restored_files"),
            "restore_seconds": _seconds(restore_seconds, "restore_seconds"),
        }
        given = {k: v for k, v in optional.items() if v is not None}
        with self._tx(write=True) as session:
            if session.get(FailoverRow, pid) is None:
                raise PermanentError(f"no failover {pid}")
            row = self._upsert(
                session,
                FailoverResultRow,
                {"plan_id": pid, "client_id": client, **values, **optional},
                ["plan_id", "client_id"],
                [*values, *given],
            )
            return to_record(FailoverResult, row)

    def failover_results(self, plan_id: str) -> list[FailoverResult]:
        """Per-client results of failover *plan_id*, by client id."""
        pid = check_plan_id(plan_id)
        with self._tx(write=False) as session:
            rows = session.scalars(
                select(FailoverResultRow)
                .where(FailoverResultRow.plan_id == pid)
                .order_by(FailoverResultRow.client_id)
            )
            return [to_record(FailoverResult, row) for row in rows]


__all__ = ["RESULT_OUTCOMES", "STEP_STATES", "FailoverMixin", "check_plan_id", "check_step"]
