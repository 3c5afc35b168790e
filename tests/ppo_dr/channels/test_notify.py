"""Durable, idempotent delivery on a real SQLite store, through the real clients and
their local stand-ins: never twice, retried while transient, then the other channel."""

from __future__ import annotations

import logging
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from ppo_dr.channels import (
    Channel,
    ChannelPermanentError,
    ChannelTransientError,
    MessageChannel,
    Outbox,
    read_outbox,
)
from ppo_dr.errors import PermanentError
from ppo_dr.inventory import Person
from ppo_dr.notify import (
    DeliveryResult,
    address_for,
    deliver,
    deliver_or_fall_back,
    give_up,
    retry_delay,
)
from ppo_dr.store import Store

from .conftest import SendGridStandIn, assert_no_secret
from .test_sendgrid import channel as sendgrid_channel
from .test_sns import channel as sns_channel
from .test_sns import sent_sms

ALICE = Person(id="alice", name="Alice", email="alice@example.org", sms="+27821234567")
SUBJECT = "[P1] app-jhb1-1 down"
BODY = "app-jhb1-1 has not answered for 3 minutes. Ack: ppo-dr incident ack 1"


@dataclass(frozen=True, slots=True)
class Intent:
    """The shape ``ppo_dr.escalation.NoticeIntent`` has (kept local: delivery must not
    depend on how the decision is made)."""

    key: str
    step: str
    channel: MessageChannel
    recipient: str
    subject: str
    body: str = field(repr=False)


PEOPLE = {"alice": ALICE}


def incident(store: Store) -> int:
    """A real incident row for the notices to hang on."""
    opened, _ = store.open_incident(
        "outage", "server/app-jhb1-1", "app-jhb1-1 down", {"server": "app-jhb1-1"}
    )
    return opened.id


def page(incident_id: int, channel: MessageChannel, step: str = "level-1") -> Intent:
    key = f"incident:{incident_id}/step:{step}/to:alice/via:{channel}"
    return Intent(key, step, channel, "alice", SUBJECT, BODY)


Channels = dict[MessageChannel, Channel]


def live_channels(sendgrid_url: str, moto_url: str, *, timeout: float = 0.5) -> Channels:
    return {"email": sendgrid_channel(sendgrid_url, timeout), "sms": sns_channel(moto_url)}


@pytest.fixture
def channels(sendgrid_server: SendGridStandIn, moto_sns: str) -> Channels:
    """E-mail and SMS through the real clients, to the SendGrid stand-in and moto."""
    return live_channels(sendgrid_server.url, moto_sns)


def page_alice(
    store: Store,
    inc: int,
    channels: Channels,
    first: MessageChannel = "email",
    then: MessageChannel | None = "sms",
    **policy: Any,
) -> DeliveryResult:
    """Page Alice on *first*, on *then* if that cannot go (by default the e-mail, then SMS)."""
    fallback = None if then is None else page(inc, then)
    return deliver_or_fall_back(
        store,
        page(inc, first),
        channels,
        incident_id=inc,
        address=address_for(page(inc, first), PEOPLE),
        fallback=fallback,
        fallback_address=None if fallback is None else address_for(fallback, PEOPLE),
        **policy,
    )


# --------------------------------------------------------------------------- addresses


def test_addresses_come_from_the_person_for_their_channel() -> None:
    assert address_for(page(1, "email"), PEOPLE) == ALICE.email
    assert address_for(page(1, "sms"), PEOPLE) == ALICE.sms
    contact = Intent("k", "clients", "email", "cto@client.example", "s", "b")
    assert address_for(contact, PEOPLE) == "cto@client.example"
    bob = Person(id="bob", name="Bob", email="bob@example.org")
    with pytest.raises(PermanentError, match="bob has no sms address"):
        address_for(Intent("k", "level-1", "sms", "bob", "s", "b"), {"bob": bob})


# --------------------------------------------------------------------------- never twice


def test_the_same_intent_delivered_twice_sends_once(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    intent = page(inc, "email")

    def run_flow() -> DeliveryResult:  # each run a new process: new clients, same store
        return deliver(store, intent, channels, incident_id=inc, address=ALICE.email)

    first, again = run_flow(), run_flow()  # the second is the flow restarted

    assert first.sent_now and first.delivered
    assert not again.sent_now and again.delivered
    assert len(sendgrid_server.requests) == 1
    assert sendgrid_server.requests[0].json()["personalizations"][0]["to"] == [
        {"email": ALICE.email}
    ]
    notice = store.notice(intent.key)
    assert notice is not None
    assert (notice.status, notice.receipt, notice.attempts) == ("sent", "sendgrid:sg-1", 1)
    assert (notice.recipient, notice.incident_id) == ("alice", inc)


def test_a_transient_failure_then_success_sends_once_and_records_the_receipt(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    intent = page(inc, "email")
    sendgrid_server.answers = ["500"]
    with pytest.raises(ChannelTransientError, match="sendgrid 500"):
        deliver(store, intent, channels, incident_id=inc, address=ALICE.email)
    pending = store.notice(intent.key)
    assert pending is not None and pending.status == "pending"  # re-used by the retry

    result = deliver(store, intent, channels, incident_id=inc, address=ALICE.email)
    assert result.sent_now
    assert (result.notice.status, result.notice.receipt) == ("sent", "sendgrid:sg-2")
    assert len(sendgrid_server.requests) == 2  # one refused, one accepted: one e-mail
    assert len(store.notices(inc)) == 1


def test_a_permanent_failure_is_recorded_and_falls_back_to_sms(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    intent, other = page(inc, "email"), page(inc, "sms")
    sendgrid_server.answer = "401"
    with pytest.raises(ChannelPermanentError) as caught:
        deliver(store, intent, channels, incident_id=inc, address=ALICE.email)

    fallback = give_up(store, intent, caught.value, incident_id=inc, fallback=other)
    failed = store.notice(intent.key)
    assert failed is not None and failed.status == "failed"
    assert failed.error == (
        "sendgrid 401: API key refused: The provided authorization grant is invalid."
    )
    assert fallback is other

    result = deliver(store, other, channels, incident_id=inc, address=address_for(other, PEOPLE))
    assert result.notice.status == "sent"
    assert (result.notice.receipt or "").startswith("sns:")
    assert list(sent_sms().values()) == [(ALICE.sms, BODY)]


def test_a_fallback_to_a_channel_the_step_already_used_is_not_sent_again(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    email, sms = page(inc, "email"), page(inc, "sms")
    deliver(store, sms, channels, incident_id=inc, address=ALICE.sms)
    sendgrid_server.answer = "400"
    with pytest.raises(ChannelPermanentError) as caught:
        deliver(store, email, channels, incident_id=inc, address=ALICE.email)
    assert give_up(store, email, caught.value, incident_id=inc, fallback=sms) is None
    assert len(sent_sms()) == 1


def test_a_sent_notice_stays_sent_when_given_up_late(store: Store, tmp_path: Path) -> None:
    inc = incident(store)
    intent = page(inc, "email")
    deliver(store, intent, {"email": Outbox(tmp_path / "o.jsonl")}, incident_id=inc)
    assert (
        give_up(store, intent, "late timeout", incident_id=inc, fallback=page(inc, "sms")) is None
    )
    notice = store.notice(intent.key)
    assert notice is not None and notice.status == "sent"


def test_giving_up_before_anything_was_recorded_still_records_the_failure(store: Store) -> None:
    inc = incident(store)
    intent = page(inc, "sms")
    assert give_up(store, intent, TimeoutError("slow"), incident_id=inc) is None
    notice = store.notice(intent.key)
    assert notice is not None and (notice.status, notice.error) == ("failed", "TimeoutError: slow")


def test_no_channel_configured_is_permanent(store: Store) -> None:
    inc = incident(store)
    with pytest.raises(PermanentError, match="no email channel"):
        deliver(store, page(inc, "email"), {}, incident_id=inc)


# --------------------------------------------------------------------------- the whole policy


def test_throttling_and_5xx_are_retried_with_backoff_then_sms(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    sendgrid_server.answers = ["429", "500", "503"]
    sendgrid_server.answer = "500"
    waits: list[float] = []
    result = page_alice(store, inc, channels, sleep=waits.append)
    assert waits == [7.0, 4.0, 15.0]  # Retry-After 7 honoured, then the back-off
    assert len(sendgrid_server.requests) == 4
    assert result.delivered and result.notice.channel == "sms"
    assert [n.status for n in result.failed] == ["failed"]
    assert result.failed[0].error is not None and "sendgrid 500" in result.failed[0].error
    assert list(sent_sms().values()) == [(ALICE.sms, BODY)]


def test_a_hanging_provider_times_out_and_falls_back(
    store: Store, sendgrid_server: SendGridStandIn, moto_sns: str
) -> None:
    inc = incident(store)
    sendgrid_server.answer = "hang"
    channels = live_channels(sendgrid_server.url, moto_sns, timeout=0.2)
    result = page_alice(store, inc, channels, delays=(0.0,), sleep=lambda _: None)
    assert result.delivered and result.notice.channel == "sms"
    assert result.failed[0].error == "sendgrid: no answer within 0.2 s"


def test_a_transient_recovery_inside_the_policy_sends_once(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    sendgrid_server.answers = ["500"]
    result = page_alice(store, inc, channels, sleep=lambda _: None)
    assert result.delivered and result.notice.channel == "email" and result.failed == ()
    assert sent_sms() == {}


def test_both_channels_failing_ends_failed_without_ping_pong(
    store: Store, sendgrid_server: SendGridStandIn, channels: Channels
) -> None:
    inc = incident(store)
    channels["sms"] = sns_channel("http://127.0.0.1:9")  # nothing listens there
    sendgrid_server.answer = "401"
    result = page_alice(store, inc, channels, "sms", "email", delays=(0.0,), sleep=lambda _: None)
    assert not result.delivered
    assert [(n.channel, n.status) for n in result.failed] == [
        ("sms", "failed"),
        ("email", "failed"),
    ]
    assert len(sendgrid_server.requests) == 1


def test_a_long_retry_after_falls_back_at_once() -> None:
    throttled = ChannelTransientError("x", "rate limited", status=429, retry_after=900)
    assert retry_delay(throttled, 1.0) is None
    assert retry_delay(ChannelTransientError("x", "500"), 4.0) == 4.0


def test_secrets_never_reach_logs_errors_or_the_store(
    store: Store,
    sendgrid_server: SendGridStandIn,
    channels: Channels,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    inc = incident(store)
    intent = page(inc, "email")
    sendgrid_server.answers = ["401"]
    errors: list[str] = []
    try:
        deliver(store, intent, channels, incident_id=inc, address=ALICE.email)
    except ChannelPermanentError as exc:
        errors.append("".join(traceback.format_exception(exc)))
    result = page_alice(store, inc, channels, "email", None, sleep=lambda _: None)
    assert result.delivered
    stored = " ".join(f"{n.error} {n.receipt}" for n in store.notices())
    assert_no_secret(caplog.text + " ".join(errors) + stored)
    assert BODY not in caplog.text


def test_outbox_delivery_is_idempotent_and_readable(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "outbox.jsonl"
    inc = incident(store)
    email, sms = page(inc, "email"), page(inc, "sms")
    for _ in range(3):  # a flow restarted twice
        channels: dict[MessageChannel, Channel] = {"email": Outbox(path), "sms": Outbox(path)}
        for intent in (email, sms):
            deliver(store, intent, channels, incident_id=inc, address=address_for(intent, PEOPLE))
    lines = read_outbox(path)
    assert [(line["channel"], line["key"], line["recipient"]) for line in lines] == [
        ("email", email.key, ALICE.email),
        ("sms", sms.key, ALICE.sms),
    ]
    receipts = {n.idempotency_key: n.receipt for n in store.notices()}
    assert receipts == {line["key"]: f"outbox:{line['id']}" for line in lines}


def test_the_escalation_decisions_intents_deliver_as_they_are(store: Store, tmp_path: Path) -> None:
    """``ppo_dr.escalation`` decides what to send; its intents and fallback plug in."""
    escalation = pytest.importorskip("ppo_dr.escalation")
    inc = incident(store)
    key = escalation.notice_key(inc, "page-1", "alice", "sms")
    sms = escalation.NoticeIntent(key, "page-1", "sms", "alice", SUBJECT, BODY)
    email = escalation.fallback(sms, "sms", ALICE)
    outbox = Outbox(tmp_path / "o.jsonl")
    channels: dict[MessageChannel, Channel] = {"email": outbox}  # no SMS channel: permanent
    result = deliver_or_fall_back(
        store,
        sms,
        channels,
        incident_id=inc,
        address=address_for(sms, PEOPLE),
        fallback=email,
        fallback_address=address_for(email, PEOPLE),
        sleep=lambda _: None,
    )
    assert result.delivered and result.notice.idempotency_key == email.key
    assert [line["recipient"] for line in read_outbox(outbox.path)] == [ALICE.email]
