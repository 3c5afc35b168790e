"""SNS: the real boto3 client against moto's server, and against a stand-in that answers
AWS query-protocol errors (throttling, server errors, refused credentials, a hang)."""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from moto.sns.models import sns_backends
from pydantic import SecretStr

from ppo_dr.channels import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    SnsSettings,
    SnsSms,
)
from ppo_dr.errors import is_retryable
from tests.s3 import AwsErrors
from tests.standin import Request, serve

from .conftest import SENTINELS, assert_no_secret, page_to_alice

SMS = page_to_alice("sms", "+27821234567", "[P1] app-jhb1-1 down 3 min. Ack: ppo-dr incident ack 1")


def channel(endpoint: str, *, read_timeout: float = 2.0) -> SnsSms:
    return SnsSms(
        SnsSettings(
            region="eu-west-1",
            access_key_id=SecretStr(SENTINELS["aws_key_id"]),
            secret_access_key=SecretStr(SENTINELS["aws_secret"]),
            endpoint_url=endpoint,
            connect_timeout=1.0,
            read_timeout=read_timeout,
        )
    )


def sent_sms() -> dict[str, tuple[str, str]]:
    """Every SMS moto's SNS accepted, by message id (moto runs in this process)."""
    found: dict[str, tuple[str, str]] = {}
    for account in list(sns_backends):
        for region in list(sns_backends[account]):
            found.update(sns_backends[account][region].sms_messages)
    return found


def test_an_sms_is_published_and_moto_holds_it(
    moto_sns: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    receipt = channel(moto_sns).send(SMS)

    assert receipt.provider == "sns"
    assert sent_sms() == {receipt.message_id: (SMS.recipient, SMS.body)}
    # botocore logs signing details (the key id) and request bodies at DEBUG.
    assert_no_secret(caplog.text)
    assert SMS.body not in caplog.text


def test_a_body_over_1600_bytes_is_refused_before_sending(moto_sns: str) -> None:
    long = OutboundMessage(SMS.key, "sms", SMS.recipient, "", "é" * 801)
    with pytest.raises(ChannelPermanentError, match="1602 bytes"):
        channel(moto_sns).send(long)
    assert sent_sms() == {}


# --------------------------------------------------------------------------- error stand-in


@dataclass
class AwsStandIn(AwsErrors):
    """Answers every Publish with one AWS query-protocol error (or hangs)."""

    status: int = 400
    code: str = "Throttling"
    message: str = "Rate exceeded"

    def error_xml(self, request: Request) -> str:
        kind = "Receiver" if self.status >= 500 else "Sender"
        return (
            '<ErrorResponse xmlns="http://sns.amazonaws.com/doc/2010-03-31/">'
            f"<Error><Type>{kind}</Type><Code>{self.code}</Code>"
            f"<Message>{self.message}</Message></Error>"
            "<RequestId>4f2b0c8e-0000-0000-0000-000000000000</RequestId></ErrorResponse>"
        )


@pytest.fixture
def aws_errors() -> Iterator[AwsStandIn]:
    """A local endpoint answering every Publish with one AWS query-protocol error."""
    with serve(AwsStandIn()) as stand_in:
        yield stand_in


@pytest.mark.parametrize(
    ("status", "code", "headers", "error", "retry_after"),
    [
        (400, "Throttling", {"Retry-After": "3"}, ChannelTransientError, 3.0),
        (400, "ThrottledException", {}, ChannelTransientError, None),
        (500, "InternalError", {}, ChannelTransientError, None),
        (503, "ServiceUnavailable", {}, ChannelTransientError, None),
        (502, "SomethingNew", {}, ChannelTransientError, None),  # unknown code, 5xx status
        (403, "InvalidClientTokenId", {}, ChannelPermanentError, None),
        (403, "SignatureDoesNotMatch", {}, ChannelPermanentError, None),
        (400, "InvalidParameter", {}, ChannelPermanentError, None),
        (400, "SomethingElse", {}, ChannelPermanentError, None),  # unknown 4xx: no loop
    ],
)
def test_aws_errors_map_by_code_then_status(
    aws_errors: AwsStandIn,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
    headers: dict[str, str],
    error: type[Exception],
    retry_after: float | None,
) -> None:
    caplog.set_level(logging.DEBUG)
    aws_errors.status, aws_errors.code, aws_errors.headers = status, code, headers
    with pytest.raises(error, match=code) as caught:
        channel(aws_errors.url).send(SMS)

    assert getattr(caught.value, "retry_after", None) == retry_after
    assert is_retryable(caught.value) is (error is ChannelTransientError)
    assert len(aws_errors.requests) == 1, "botocore's own retries must be off: one attempt"
    assert b"PhoneNumber=%2B27821234567" in aws_errors.requests[0].body
    assert_no_secret("".join(traceback.format_exception(caught.value)) + caplog.text)


def test_a_hanging_endpoint_is_a_transient_timeout(aws_errors: AwsStandIn) -> None:
    aws_errors.hang = True
    started = time.monotonic()
    with pytest.raises(ChannelTransientError, match="timed out"):
        channel(aws_errors.url, read_timeout=0.3).send(SMS)
    assert time.monotonic() - started < 3


def test_settings_fail_fast_and_hide_keys() -> None:
    with pytest.raises(ChannelPermanentError, match="both"):
        SnsSms(SnsSettings(region="eu-west-1", access_key_id=SecretStr(SENTINELS["aws_key_id"])))
    with pytest.raises(ValueError, match="region"):
        SnsSettings(region="")
    settings = SnsSettings(
        region="eu-west-1",
        access_key_id=SecretStr(SENTINELS["aws_key_id"]),
        secret_access_key=SecretStr(SENTINELS["aws_secret"]),
    )
    assert_no_secret(repr(settings) + str(settings) + repr(SnsSms(settings)))
