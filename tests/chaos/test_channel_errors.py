"""Paging through failing providers: the fault's fleet copy and its verdict (pure).

A clean run as the stand-in logs it (SMS given up after four attempts and the person
reached by e-mail; e-mail and X through on their fourth) holds; each rule broken on
its own fails the fault with its note.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ppo_dr.lab.chaos.catalogue import BY_NAME
from ppo_dr.lab.chaos.channel_errors import (
    CREDENTIAL_ENV,
    ChannelObservation,
    SentNotice,
    earliest_retry,
    judge_channel_errors,
    standin_fleet,
)
from ppo_dr.lab.chaos.verdict import RESULT_KEYS
from ppo_dr.lab.standin import SeenRequest
from tests.chaos.judging import assert_fails_saying
from tests.chaos.test_verdict import T0
from tests.ppo_dr.test_inventory import dump, example, parse_fleet

SPEC = BY_NAME["channel-errors"]
START = T0.timestamp()
SIPHO, ANNA = "+27821110001", "+27821110002"
SIPHO_MAIL = "sipho@ppo.example"


def seen(vendor: str, to: str, step: str, at: float, took: float = 0.01) -> SeenRequest:
    """A request *at* seconds after the incident opened, answered *took* later."""
    mid = f"{vendor}-{at:g}" if step == "ok" else None
    return SeenRequest(vendor, to, step, START + at, START + at + took, mid)


REQUESTS = (
    seen("sns", SIPHO, "500", 1.0),
    seen("sns", SIPHO, "429", 2.5),
    seen("sns", SIPHO, "timeout", 7.0, took=15.0),
    seen("sns", SIPHO, "500", 33.0),
    seen("sendgrid", SIPHO_MAIL, "500", 34.0),
    seen("sendgrid", SIPHO_MAIL, "429", 35.5),
    seen("sendgrid", SIPHO_MAIL, "timeout", 40.0, took=15.0),
    seen("sendgrid", SIPHO_MAIL, "ok", 62.0),
    seen("sns", ANNA, "ok", 63.0),
    seen("x", "public", "500", 70.0),
    seen("x", "public", "429", 71.0),
    seen("x", "public", "timeout", 76.0, took=15.0),
    seen("x", "public", "ok", 95.0),
)
NOTICES = (
    SentNotice("1/page.1/sipho/sms", "page.1", "sms", "sipho", SIPHO, "failed", 4, None),
    SentNotice(
        "1/page.1/sipho/email", "page.1", "email", "sipho", SIPHO_MAIL, "sent", 4,
        "sendgrid:sendgrid-62",
    ),
    SentNotice("1/page.1/anna/sms", "page.1", "sms", "anna", ANNA, "sent", 1, "sns:sns-63"),
    SentNotice("1/public.1/public/x", "public.1", "x", "public", "public", "sent", 4, "x:x-95"),
)  # fmt: skip
CLEAN = ChannelObservation(
    fault="channel-errors",
    incident_id=1,
    opened_at=T0,
    requests=REQUESTS,
    notices=NOTICES,
    escalation_state="COMPLETED",
)


def moved(index: int, at: float) -> tuple[SeenRequest, ...]:
    """The clean log with request *index* arriving *at* seconds after the opening."""
    return (*REQUESTS[:index], replace(REQUESTS[index], at=START + at), *REQUESTS[index + 1 :])


def _notice(key_part: str, **changes: object) -> tuple[SentNotice, ...]:
    return tuple(replace(n, **changes) if key_part in n.key else n for n in NOTICES)  # type: ignore[arg-type]


def test_a_clean_run_holds_and_its_row_has_exactly_the_issue_keys() -> None:
    result = judge_channel_errors(SPEC, CLEAN)
    assert result.passed, result.notes
    assert list(result.as_json()) == list(RESULT_KEYS)
    assert (result.pages_sent, result.duplicate_notices, result.incidents_opened) == (2, 0, 1)
    assert result.detected_after_s == 1.0
    assert "fallback e-mail reached sipho" in result.notes[0]
    assert result.events[0] == ("incident opened", 0.0)


@pytest.mark.parametrize(
    ("obs", "says"),
    [
        (replace(CLEAN, incident_id=None, opened_at=None), "no incident was opened"),
        (replace(CLEAN, requests=tuple(replace(r, step="ok") for r in REQUESTS)), "not in force"),
        (replace(CLEAN, notices=_notice("sipho/sms", attempts=3)), "the notices count 3"),
        (replace(CLEAN, requests=moved(1, 1.2)), "sooner than its back-off allows"),
        (replace(CLEAN, requests=moved(2, 3.0)), "after a 429, sooner"),
        (replace(CLEAN, requests=moved(3, 12.0)), "after a timeout, sooner"),
        (
            replace(CLEAN, requests=REQUESTS[:3] + REQUESTS[4:]),
            "a timeout was not retried",
        ),
        (replace(CLEAN, notices=_notice("sipho/email", status="failed")), "no e-mail fallback"),
        (replace(CLEAN, notices=_notice("anna/sms", status="pending")), "left pending"),
        (
            replace(CLEAN, requests=(*REQUESTS, seen("sns", ANNA, "ok", 99.0))),
            "no notice's receipt (sent twice)",
        ),
        (replace(CLEAN, notices=_notice("x", receipt="sns:sns-63")), "on more than one notice"),
        (replace(CLEAN, escalation_state="FAILED"), "the escalation run ended FAILED"),
        (replace(CLEAN, problems=("LabError: the stand-in did not start",)), "did not start"),
    ],
)
def test_each_broken_rule_fails_the_fault_with_its_note(obs: ChannelObservation, says: str) -> None:
    assert_fails_saying(judge_channel_errors(SPEC, obs), says)


def test_no_sms_given_up_means_the_fallback_was_not_exercised() -> None:
    sms_ok = tuple(r for r in REQUESTS if r.recipient != SIPHO)
    notices = tuple(n for n in NOTICES if n.person != "sipho")
    result = judge_channel_errors(SPEC, replace(CLEAN, requests=sms_ok, notices=notices))
    assert any("the fallback was not exercised" in n for n in result.notes)
    assert any("sns: the stand-in served" in n for n in result.notes)


def test_a_duplicate_send_is_counted_in_the_row() -> None:
    twice = (*REQUESTS, seen("sendgrid", SIPHO_MAIL, "ok", 100.0))
    assert judge_channel_errors(SPEC, replace(CLEAN, requests=twice)).duplicate_notices == 1


def test_the_earliest_retry_follows_what_the_provider_answered() -> None:
    assert earliest_retry(seen("sns", SIPHO, "500", 0.0)) == pytest.approx(START + 0.51)
    assert earliest_retry(seen("sns", SIPHO, "429", 0.0)) == pytest.approx(START + 2.01)
    assert earliest_retry(seen("sns", SIPHO, "timeout", 0.0, took=15.0)) == START + 10.5


def test_the_fleet_copy_sends_every_channel_to_the_standin_and_pages_by_sms() -> None:
    doc = example()
    copy = standin_fleet(doc, "http://127.0.0.1:8125")
    fleet = parse_fleet(dump(copy))  # valid as a fleet file, no YAML aliases
    assert (fleet.channels.email.provider, fleet.channels.sms.provider) == ("sendgrid", "sns")
    assert fleet.channels.x.provider == "x"
    for channel in (fleet.channels.email, fleet.channels.sms, fleet.channels.x):
        assert channel.endpoint_url == "http://127.0.0.1:8125"
    assert fleet.channels.email.api_key is not None
    assert fleet.channels.email.api_key.env == CREDENTIAL_ENV
    assert fleet.escalation is not None
    assert all(level.channels == ("sms",) for level in fleet.escalation.levels)
    assert doc == example()  # the lab's own document is left as it was
