"""Notices: every message to a person or the public, recorded under an idempotency key
*before* it is sent, so a retried task finds the record and never sends twice.

Status: ``pending`` → ``sent`` | ``failed`` (→ ``sent`` on a later attempt) | ``skipped``.
``attempts`` counts send attempts, successful or not. Bodies are stored (they are the
evidence of what people were told) but never logged: they are hidden from reprs and
from error messages. Keeping secrets out of them is the caller's job.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from ppo_dr.store.base import StoreBase, to_record
from ppo_dr.store.checks import check_incident_id, check_text, utc
from ppo_dr.store.records import Notice
from ppo_dr.store.schema import KEY_LEN, NoticeRow

_BODY_LEN: Final = 100_000
_ERROR_LEN: Final = 4000


class NoticesMixin(StoreBase):
    def record_notice(
        self,
        key: str,
        *,
        incident_id: int | None,
        step: str,
        channel: str,
        recipient: str,
        subject: str,
        body: str,
        at: datetime | None = None,
    ) -> tuple[Notice, bool]:
        """Record a notice as ``pending`` unless *key* is known; returns ``(notice, created)``.

        Race-safe: the unique idempotency key decides, so two tasks recording the same
        notice get the same row and exactly one of them sees ``created=True``.
        """
        key = check_text(key, "idempotency key", KEY_LEN)
        step = check_text(step, "step", 64)
        channel = check_text(channel, "channel", 32)
        recipient = check_text(recipient, "recipient", KEY_LEN)
        subject = check_text(subject, "subject", _BODY_LEN, empty_ok=True)
        body = check_text(body, "body", _BODY_LEN, empty_ok=True)
        when = utc(at, "notice time")
        if incident_id is not None:
            check_incident_id(incident_id)
        values = {
            "idempotency_key": key,
            "incident_id": incident_id,
            "step": step,
            "channel": channel,
            "recipient": recipient,
            "subject": subject,
            "body": body,
            "status": "pending",
            "attempts": 0,
            "receipt": None,
            "error": None,
            "created_at": when,
            "sent_at": None,
        }
        with self._tx(write=True) as session:
            self._require_incident(
                session, incident_id, f"notice {key!r}: no incident with id {incident_id}"
            )
            row, created = self._insert_or_find(session, NoticeRow, values, ["idempotency_key"])
            assert row is not None  # notices are never deleted
            return to_record(Notice, row), created

    def notice(self, key: str) -> Notice | None:
        """The notice recorded under *key*, or None."""
        key = check_text(key, "idempotency key", KEY_LEN)
        with self._tx(write=False) as session:
            row = session.scalars(select(NoticeRow).where(NoticeRow.idempotency_key == key)).first()
            return None if row is None else to_record(Notice, row)

    def mark_notice_sent(self, key: str, receipt: str, *, at: datetime | None = None) -> Notice:
        """The provider accepted the notice; *receipt* is its message id. Idempotent."""
        key = check_text(key, "idempotency key", KEY_LEN)
        receipt = check_text(receipt, "receipt", KEY_LEN, empty_ok=True)
        when = utc(at, "sent time")
        with self._tx(write=True) as session:
            row = self._by_key(session, key)
            if row.status == "sent":
                return to_record(Notice, row)
            row.status = "sent"
            row.receipt = receipt
            row.sent_at = when
            row.error = None
            row.attempts += 1
            return to_record(Notice, row)

    def note_notice_attempt(self, key: str, error: str) -> Notice:
        """A send attempt the provider refused: count it and keep its error; the notice
        stays ``pending`` (a retry or :meth:`mark_notice_failed` decides what next)."""
        return self._failed_attempt(key, error, give_up=False, counted=True)

    def mark_notice_failed(self, key: str, error: str, *, counted: bool = True) -> Notice:
        """Given up: ``failed`` with the (truncated) error; the attempt is counted unless
        *counted* is False (already counted by :meth:`note_notice_attempt`, or none was
        made). A sent notice stays sent."""
        return self._failed_attempt(key, error, give_up=True, counted=counted)

    def _failed_attempt(self, key: str, error: str, *, give_up: bool, counted: bool) -> Notice:
        key = check_text(key, "idempotency key", KEY_LEN)
        error = check_text(error, "error", 10**9, empty_ok=True)[:_ERROR_LEN]
        with self._tx(write=True) as session:
            row = self._by_key(session, key)
            if row.status in ("sent", "skipped"):
                return to_record(Notice, row)
            if give_up:
                row.status = "failed"
            row.error = error
            row.attempts += 1 if counted else 0
            return to_record(Notice, row)

    def mark_notice_skipped(self, key: str, reason: str) -> Notice:
        """Decided not to send (e.g. incident resolved meanwhile). A sent notice stays sent."""
        key = check_text(key, "idempotency key", KEY_LEN)
        reason = check_text(reason, "reason", _ERROR_LEN, empty_ok=True)
        with self._tx(write=True) as session:
            row = self._by_key(session, key)
            if row.status == "sent":
                return to_record(Notice, row)
            row.status = "skipped"
            row.error = reason or None
            return to_record(Notice, row)

    def notices(self, incident_id: int | None = None) -> list[Notice]:
        """All notices, or those of one incident, in the order they were recorded."""
        stmt = select(NoticeRow).order_by(NoticeRow.created_at, NoticeRow.id)
        if incident_id is not None:
            stmt = stmt.where(NoticeRow.incident_id == check_incident_id(incident_id))
        return self._records(Notice, stmt)

    @staticmethod
    def _by_key(session: Session, key: str) -> NoticeRow:
        return StoreBase._locked_row(
            session,
            NoticeRow,
            NoticeRow.idempotency_key == key,
            missing=f"no notice with idempotency key {key!r}",
        )
