"""SendGrid: the real ``sendgrid`` client against a local v3 stand-in that checks payloads."""

from __future__ import annotations

import logging
import time
import traceback

import pytest
from pydantic import SecretStr

from ppo_dr.channels import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    SendGridEmail,
    SendGridSettings,
)
from ppo_dr.errors import is_retryable

from .conftest import SENTINELS, SendGridStandIn, assert_no_secret, page_to_alice

MAIL = page_to_alice(
    "email",
    "alice@example.org",
    subject="[P1] app-jhb1-1 down",
    body="app-jhb1-1 has not answered for 3 minutes. Acknowledge: ppo-dr incident ack 1",
)


def channel(url: str, timeout: float = 0.5) -> SendGridEmail:
    return SendGridEmail(
        SendGridSettings(
            api_key=SecretStr(SENTINELS["sendgrid"]),
            sender="noc@example.com",
            host=url,
            timeout=timeout,
        )
    )


def test_a_mail_is_sent_with_the_v3_payload_and_the_message_id_is_the_receipt(
    sendgrid_server: SendGridStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receipt = channel(sendgrid_server.url).send(MAIL)

    assert str(receipt) == "sendgrid:sg-1"
    assert sendgrid_server.problems == []
    (seen,) = sendgrid_server.requests
    assert seen.headers["Authorization"] == f"Bearer {SENTINELS['sendgrid']}"
    payload = seen.json()
    assert payload["from"] == {"email": "noc@example.com"}
    assert payload["personalizations"][0]["to"] == [{"email": "alice@example.org"}]
    assert payload["subject"] == MAIL.subject
    assert payload["content"] == [{"type": "text/plain", "value": MAIL.body}]
    # python-http-client logs the Authorization header and the payload at DEBUG.
    assert_no_secret(caplog.text)
    assert MAIL.body not in caplog.text


@pytest.mark.parametrize(
    ("answer", "error", "status", "retry_after"),
    [
        ("400", ChannelPermanentError, 400, None),
        ("401", ChannelPermanentError, 401, None),
        ("429", ChannelTransientError, 429, 7.0),
        ("500", ChannelTransientError, 500, None),
        ("503", ChannelTransientError, 503, None),
        ("418", ChannelPermanentError, 418, None),  # unlisted 4xx: permanent, never loops
    ],
)
def test_each_status_maps_to_a_typed_error_without_secrets(
    sendgrid_server: SendGridStandIn,
    caplog: pytest.LogCaptureFixture,
    answer: str,
    error: type[Exception],
    status: int,
    retry_after: float | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    sendgrid_server.answer = answer
    with pytest.raises(error) as caught:
        channel(sendgrid_server.url).send(MAIL)

    assert caught.value.status == status  # type: ignore[attr-defined]
    assert getattr(caught.value, "retry_after", None) == retry_after
    assert is_retryable(caught.value) is (error is ChannelTransientError)
    text = "".join(traceback.format_exception(caught.value))
    assert_no_secret(text + caplog.text)
    assert MAIL.body not in text


def test_a_400_quotes_sendgrids_reason_not_the_body(sendgrid_server: SendGridStandIn) -> None:
    sendgrid_server.answer = "400"
    with pytest.raises(ChannelPermanentError, match=r"valid address.*field to"):
        channel(sendgrid_server.url).send(MAIL)


def test_a_hanging_server_is_a_transient_timeout(sendgrid_server: SendGridStandIn) -> None:
    sendgrid_server.answer = "hang"
    started = time.monotonic()
    with pytest.raises(ChannelTransientError, match=r"no answer within 0\.3 s"):
        channel(sendgrid_server.url, timeout=0.3).send(MAIL)
    assert time.monotonic() - started < 3


def test_nothing_listening_is_a_transient_connection_error(
    sendgrid_server: SendGridStandIn,
) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(ChannelTransientError, match="cannot connect"):
        channel(f"http://127.0.0.1:{port}").send(MAIL)


def test_the_constructor_fails_fast_on_bad_config() -> None:
    with pytest.raises(ChannelPermanentError, match="API key is empty"):
        SendGridEmail(SendGridSettings(api_key=SecretStr(" "), sender="noc@example.com"))
    with pytest.raises(ValueError, match="sender"):
        SendGridSettings(api_key=SecretStr("k" * 10), sender="not-an-address")


def test_the_real_host_is_never_contacted_in_tests(loopback_only: list[str]) -> None:
    """The loopback guard turns a forgotten stand-in into a loud failure, not a mapped error."""
    real = SendGridEmail(
        SendGridSettings(api_key=SecretStr(SENTINELS["sendgrid"]), sender="noc@example.com")
    )
    with pytest.raises(pytest.fail.Exception, match=r"api\.sendgrid\.com"):
        real.send(MAIL)
    assert loopback_only == ["name lookup 'api.sendgrid.com'"]
    loopback_only.clear()  # expected here; any other test that does this fails


def test_repr_and_settings_do_not_show_the_key(sendgrid_server: SendGridStandIn) -> None:
    sg = channel(sendgrid_server.url)
    assert_no_secret(repr(sg) + repr(sg.settings) + str(sg.settings))


def test_a_message_of_another_kind_is_refused_before_any_request(
    sendgrid_server: SendGridStandIn,
) -> None:
    sms = OutboundMessage(MAIL.key, "sms", "+27821234567", "", MAIL.body)
    with pytest.raises(ChannelPermanentError, match="sendgrid: cannot carry a sms message"):
        channel(sendgrid_server.url).send(sms)
    assert sendgrid_server.requests == []
