"""SMS through Amazon SNS ``Publish(PhoneNumber=...)``, with boto3.

SNS answers with a ``MessageId`` (the receipt). Errors come as botocore
``ClientError`` with an AWS error code, which matters more than the HTTP status
(throttling is a 400 ``Throttling`` on the query protocol), so codes are mapped
first and the status only as a fallback. Transport failures are botocore's own
exceptions. botocore's built-in retries are switched off (one attempt): the Prefect
task's back-off is the one retry policy, and retries inside retries multiply.
"""

from __future__ import annotations

from typing import Any, Final

import boto3
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    NoCredentialsError,
    ParamValidationError,
    ReadTimeoutError,
)
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from ppo_dr.aws_clients import client_config
from ppo_dr.channels.base import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    ProviderChannel,
    clip,
    refusals,
)
from ppo_dr.secret_refs import REDACTOR

#: SNS refuses SMS bodies over 1,600 bytes; checked before sending.
SMS_MAX_BYTES: Final = 1600

#: AWS error codes that mean "slow down": retry after a while.
_THROTTLING_CODES: Final = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottled",
        "TooManyRequestsException",
        "RequestLimitExceeded",
    }
)
#: AWS error codes for a provider-side failure: retry.
_SERVER_CODES: Final = frozenset(
    {"InternalError", "InternalFailure", "ServiceUnavailable", "KMSThrottling"}
)
#: AWS error codes that will not change on retry, with what the operator should do.
_PERMANENT_CODES: Final[dict[str, str]] = {
    "InvalidClientTokenId": "access key id refused",
    "SignatureDoesNotMatch": "secret access key refused",
    "UnrecognizedClientException": "credentials refused",
    "AuthorizationError": "credentials lack sns:Publish",
    "AccessDenied": "credentials lack sns:Publish",
    "InvalidParameter": "phone number or message refused",
    "InvalidParameterValue": "phone number or message refused",
    "OptedOut": "the number has opted out of SMS",
}


#: How this provider's HTTP statuses read (the common table, in its own words).
SNS_STATUSES: Final = refusals(
    {400: "request refused", 403: "credentials refused or lack permission"}
)


class SnsSettings(BaseModel):
    """What the SNS channel needs; both keys are SecretStr and never printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    region: str = Field(min_length=1, pattern=r"^[a-z0-9-]+$")
    access_key_id: SecretStr | None = None
    secret_access_key: SecretStr | None = None
    endpoint_url: str | None = Field(default=None, pattern=r"^https?://[^/\s]+")
    sender_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{1,11}$")
    connect_timeout: float = Field(default=5.0, gt=0, le=60)
    read_timeout: float = Field(default=10.0, gt=0, le=120)


class SnsSms(ProviderChannel):
    """One SMS per message; the boto3 client is built once, here."""

    name = "sns"
    carries = "sms"
    status_table = SNS_STATUSES

    def __init__(self, settings: SnsSettings) -> None:
        if (settings.access_key_id is None) != (settings.secret_access_key is None):
            raise ChannelPermanentError(
                self.name, "give both access_key_id and secret_access_key, or neither"
            )
        self.settings = settings
        credentials: dict[str, str] = {}
        if settings.access_key_id is not None and settings.secret_access_key is not None:
            credentials = {
                "aws_access_key_id": settings.access_key_id.get_secret_value(),
                "aws_secret_access_key": settings.secret_access_key.get_secret_value(),
            }
            for value in credentials.values():
                REDACTOR.protect(value)
        self._client: Any = boto3.session.Session().client(
            "sns",
            region_name=settings.region,
            endpoint_url=settings.endpoint_url,
            # One attempt: the task's back-off is the one retry policy (module doc).
            config=client_config(
                settings.region, settings.connect_timeout, settings.read_timeout, 1
            ),
            **credentials,
        )
        REDACTOR.install()

    def __repr__(self) -> str:
        where = self.settings.endpoint_url or "aws"
        return f"SnsSms(region={self.settings.region!r}, endpoint={where!r})"

    def publish(self, message: OutboundMessage) -> str | None:
        """Publish one SMS; SNS's ``MessageId`` is the receipt."""
        text = message.body
        size = len(text.encode("utf-8"))
        if size > SMS_MAX_BYTES:
            raise ChannelPermanentError(
                self.name, f"SMS is {size} bytes, SNS accepts at most {SMS_MAX_BYTES}"
            )
        attributes: dict[str, Any] = {
            "AWS.SNS.SMS.SMSType": {"DataType": "String", "StringValue": "Transactional"}
        }
        if self.settings.sender_id:
            attributes["AWS.SNS.SMS.SenderID"] = {
                "DataType": "String",
                "StringValue": self.settings.sender_id,
            }
        try:
            answer = self._client.publish(
                PhoneNumber=message.recipient, Message=text, MessageAttributes=attributes
            )
        except ClientError as exc:
            raise self.error_for_client_error(exc) from None
        except (ConnectTimeoutError, ReadTimeoutError) as exc:
            raise ChannelTransientError(self.name, f"timed out ({type(exc).__name__})") from None
        except (EndpointConnectionError, ConnectionClosedError) as exc:
            raise ChannelTransientError(
                self.name, f"cannot connect ({type(exc).__name__})"
            ) from None
        except NoCredentialsError:
            raise ChannelPermanentError(self.name, "no AWS credentials configured") from None
        except ParamValidationError as exc:
            raise ChannelPermanentError(
                self.name, f"request refused before sending: {clip(str(exc))}"
            ) from None
        except BotoCoreError as exc:
            raise ChannelTransientError(
                self.name, f"transport error ({type(exc).__name__})"
            ) from None
        return str(answer.get("MessageId") or "") or None

    @classmethod
    def error_for_client_error(
        cls, exc: ClientError
    ) -> ChannelTransientError | ChannelPermanentError:
        """Map an AWS error by its code (throttling is a 400), then by HTTP status."""
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        detail = clip(f"{code}: {error.get('Message', '')}".strip(": "))
        meta = exc.response.get("ResponseMetadata", {})
        status = int(meta.get("HTTPStatusCode") or 0) or None
        headers = meta.get("HTTPHeaders") or {}
        retry_after = _seconds(headers.get("retry-after"))
        if code in _THROTTLING_CODES:
            return ChannelTransientError(
                cls.name, f"throttled ({detail})", status=status, retry_after=retry_after
            )
        if code in _SERVER_CODES:
            return ChannelTransientError(cls.name, f"provider error ({detail})", status=status)
        if code in _PERMANENT_CODES:
            return ChannelPermanentError(
                cls.name, f"{_PERMANENT_CODES[code]} ({detail})", status=status
            )
        if status is None:
            return ChannelPermanentError(cls.name, f"refused ({detail})")
        return cls.error_for_status(status, detail=detail, retry_after=retry_after)


def _seconds(value: Any) -> float | None:
    try:
        return None if value is None else max(float(value), 0.0)
    except (TypeError, ValueError):
        return None
