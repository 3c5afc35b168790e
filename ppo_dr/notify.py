"""Durable, idempotent delivery of notices: record, send, receipt; never twice.

What to send, under which key, and the fallback to a person's other channel are
decided by :mod:`ppo_dr.escalation` (pure); this module delivers one such intent. It
accepts anything shaped like :class:`NoticeLike` (``escalation.NoticeIntent`` is), so
the decision and the delivery do not depend on each other.

The split between this module and the Prefect task that calls it:

``deliver(store, intent, channels, incident_id=..., address=...)``
    Records the notice under its idempotency key *before* sending
    (``record_notice``). A notice already ``sent`` (or ``skipped``) is returned
    without sending: a retried task or a restarted flow finds it and stops there.
    Otherwise it sends once and stores the provider's receipt (``mark_notice_sent``);
    an attempt the channel refuses is counted on the notice with its error
    (``note_notice_attempt``), so ``attempts`` counts every send, not only the last.
    A :class:`~ppo_dr.errors.TransientError` propagates with the notice left
    ``pending`` so the task's retry (with back-off) re-uses the same row; a
    :class:`~ppo_dr.errors.PermanentError` propagates too, and the shared retry
    condition declines it. ``retry_after`` on a
    :class:`~ppo_dr.channels.ChannelTransientError` says how long the provider asked
    us to wait (:func:`retry_delay`).
``give_up(store, intent, error, incident_id=..., fallback=...)``
    Called by the task once retries are exhausted or the error was permanent: marks
    the notice ``failed`` with a safe error text (shown on the incident) and returns
    *fallback* (``escalation.fallback(...)``: the same notice on the person's other
    channel, with its own key) unless that notice is already sent, failed or skipped
    -- so a fallback to a channel the step already used is not sent twice, and two
    failing channels do not ping-pong.
``deliver_or_fall_back(...)``
    The whole policy in plain Python (retries with back-off, then the fallback once),
    for callers without Prefect (a CLI test page, tests). Tasks use the two above so
    Prefect shows each retry.

Who receives it: ``intent.recipient`` is what the store shows (a person id, a
contact's address, ``public``); ``address`` is where the channel sends (the person's
e-mail or phone, see :func:`address_for`). It defaults to the recipient.

Left open, by design of the store API: the provider accepted a message and the
process died before ``mark_notice_sent``. The notice is still ``pending`` and a retry
sends it again; SendGrid and SNS have no idempotency key to close that gap (X refuses
the duplicate text, which ends as a permanent error). And two workers delivering the
*same* key at the same moment can both send: the flow never does that (one task per
key), and closing it would need a claim (lease) column in the notices table.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Final, Protocol, TypeVar

from ppo_dr.channels import base
from ppo_dr.channels.base import clip
from ppo_dr.errors import DRError, PermanentError, TransientError
from ppo_dr.inventory import Person
from ppo_dr.secret_refs import REDACTOR
from ppo_dr.store import Notice, Store

_log = logging.getLogger(__name__)

#: Back-off of :func:`deliver_or_fall_back` between attempts, in seconds.
DEFAULT_DELAYS: Final[tuple[float, ...]] = (1.0, 4.0, 15.0)
#: A provider's Retry-After longer than this is not waited out: fall back instead.
MAX_RETRY_AFTER: Final = 60.0
#: The recipient of a public post.
PUBLIC: Final = "public"


class NoticeLike(Protocol):
    """What :func:`deliver` needs of an intent (``escalation.NoticeIntent`` has it)."""

    @property
    def key(self) -> str: ...
    @property
    def step(self) -> str: ...
    @property
    def channel(self) -> str: ...
    @property
    def recipient(self) -> str: ...
    @property
    def subject(self) -> str: ...
    @property
    def body(self) -> str: ...


N = TypeVar("N", bound=NoticeLike)


def address_for(intent: NoticeLike, people: Mapping[str, Person]) -> str:
    """Where *intent* goes: a person's e-mail or phone for their channel; a contact's
    address or ``public`` as is. A person without that address is a PermanentError."""
    person = people.get(intent.recipient)
    if person is None:
        return intent.recipient
    address = {"email": person.email, "sms": person.sms}.get(intent.channel)
    if not address:
        raise PermanentError(f"notice {intent.key}: {person.id} has no {intent.channel} address")
    return address


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """What became of a notice: the stored record, and whether this call sent it."""

    notice: Notice
    sent_now: bool
    receipt: base.Receipt | None = None
    #: Notices given up on the way (by :func:`deliver_or_fall_back`), oldest first.
    failed: tuple[Notice, ...] = ()

    @property
    def delivered(self) -> bool:
        """True once the provider has accepted the notice (now or earlier)."""
        return self.notice.status == "sent"


def record_intent(
    store: Store, intent: NoticeLike, incident_id: int | None, at: datetime | None = None
) -> tuple[Notice, bool]:
    """Record *intent* under its key (before sending); True when this call created it."""
    return store.record_notice(
        intent.key,
        incident_id=incident_id,
        step=intent.step,
        channel=intent.channel,
        recipient=intent.recipient,
        subject=intent.subject,
        body=intent.body,
        at=at,
    )


def deliver(
    store: Store,
    intent: NoticeLike,
    channels: Mapping[base.MessageChannel, base.Channel],
    *,
    incident_id: int | None,
    address: str | None = None,
    at: datetime | None = None,
) -> DeliveryResult:
    """Record, then send once, then store the receipt. Errors propagate (module doc)."""
    notice, created = record_intent(store, intent, incident_id, at)
    if notice.status in ("sent", "skipped"):
        _log.info("notice %s already %s; not sending again", intent.key, notice.status)
        return DeliveryResult(notice, sent_now=False)
    if not created:
        _log.info("notice %s is %s; sending again", intent.key, notice.status)
    kind = next((c for c in base.MESSAGE_CHANNELS if c == intent.channel), None)
    channel = channels.get(kind) if kind else None
    if kind is None or channel is None:
        raise base.ChannelPermanentError("config", f"no {intent.channel} channel is configured")
    message = base.OutboundMessage(
        intent.key, kind, address or intent.recipient, intent.subject, intent.body
    )
    try:
        receipt = channel.send(message)
    except DRError as exc:  # every refused attempt is on the record, not only the last
        store.note_notice_attempt(intent.key, error_text(exc))
        raise
    notice = store.mark_notice_sent(intent.key, str(receipt))
    _log.info("notice %s sent by %s: %s", intent.key, channel.name, receipt)
    return DeliveryResult(notice, sent_now=True, receipt=receipt)


def give_up(
    store: Store,
    intent: NoticeLike,
    error: BaseException | str,
    *,
    incident_id: int | None,
    fallback: N | None = None,
) -> N | None:
    """Mark the notice failed (safe error text); return *fallback* if it is still worth
    sending (its notice is new or pending), else None."""
    text = error_text(error)
    if store.notice(intent.key) is None:  # failed before it could be recorded
        record_intent(store, intent, incident_id)
    notice = store.mark_notice_failed(intent.key, text, counted=False)  # deliver counted
    if notice.status == "sent":
        return None  # another attempt got through after all
    _log.warning("notice %s failed: %s", intent.key, text)
    if fallback is None:
        return None
    if fallback.channel == intent.channel:
        raise PermanentError(f"notice {intent.key}: a fallback must use another channel")
    existing = store.notice(fallback.key)
    if existing is not None and existing.status != "pending":
        _log.info("fallback %s is already %s; not using it", fallback.key, existing.status)
        return None
    return fallback


def error_text(error: BaseException | str) -> str:
    """What the store keeps about a failure: our own messages are safe by construction;
    anything else is clipped and masked, because a library may quote what it sent."""
    if isinstance(error, str):
        return REDACTOR.redact(clip(error, 500))
    if isinstance(error, DRError):
        return REDACTOR.redact(str(error))
    return f"{type(error).__name__}: {REDACTOR.redact(clip(str(error), 200))}"


def retry_delay(error: BaseException, planned: float, cap: float = MAX_RETRY_AFTER) -> float | None:
    """Seconds to wait before the next attempt: the provider's Retry-After when it gave
    one and it is longer than planned; None if over *cap* (fall back, do not page late)."""
    wait = error.retry_after if isinstance(error, base.ChannelTransientError) else None
    if wait is None:
        return planned
    return None if wait > cap else max(wait, planned)


def deliver_or_fall_back(
    store: Store,
    intent: NoticeLike,
    channels: Mapping[base.MessageChannel, base.Channel],
    *,
    incident_id: int | None,
    address: str | None = None,
    fallback: NoticeLike | None = None,
    fallback_address: str | None = None,
    delays: Iterable[float] = DEFAULT_DELAYS,
    sleep: Callable[[float], None] = time.sleep,
) -> DeliveryResult:
    """Deliver with retries on transient errors, then *fallback* once; never raises a
    channel error (the outcome is in the store and in the result)."""
    waits = tuple(delays)
    failed: list[Notice] = []
    attempts: list[tuple[NoticeLike, str | None, NoticeLike | None]] = [(intent, address, fallback)]
    while attempts:
        current, to, then = attempts.pop()
        error: BaseException | None = None
        for attempt in range(len(waits) + 1):
            try:
                result = deliver(store, current, channels, incident_id=incident_id, address=to)
                return replace(result, failed=tuple(failed))
            except TransientError as exc:
                error = exc
                wait = retry_delay(exc, waits[attempt]) if attempt < len(waits) else None
                if wait is None:
                    break
                _log.info("notice %s: %s; retrying in %.1f s", current.key, exc, wait)
                sleep(wait)
            except PermanentError as exc:
                error = exc
                break
        assert error is not None
        chosen = give_up(store, current, error, incident_id=incident_id, fallback=then)
        gone = store.notice(current.key)
        if gone is not None:
            failed.append(gone)
        if chosen is not None:
            attempts.append((chosen, fallback_address, None))  # one hop only
    return DeliveryResult(failed[-1], sent_now=False, failed=tuple(failed))


__all__ = [
    "DEFAULT_DELAYS",
    "MAX_RETRY_AFTER",
    "PUBLIC",
    "DeliveryResult",
    "NoticeLike",
    "address_for",
    "deliver",
    "deliver_or_fall_back",
    "error_text",
    "give_up",
    "retry_delay",
]
