"""E-mail through SendGrid's v3 ``mail/send``, with the official ``sendgrid`` library.

SendGrid answers 202 with the message id in ``X-Message-Id``; that id is the receipt.
It throttles with 429 and ``X-RateLimit-Reset`` (epoch seconds) or ``Retry-After``.
The library (python-http-client over urllib) raises one exception class per status
and lets socket timeouts and ``URLError`` through; all are mapped here. It has no
retries of its own, so the Prefect task's back-off is the only retry policy.
"""

from __future__ import annotations

import json
import time
import urllib.error
from http.client import HTTPException as HttpClientError
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from python_http_client.exceptions import HTTPError as SendGridHTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Mail

from ppo_dr.channels.base import (
    ChannelPermanentError,
    ChannelTransientError,
    OutboundMessage,
    ProviderChannel,
    clip,
    parse_retry_after,
    refusals,
)
from ppo_dr.secret_refs import REDACTOR

SENDGRID_HOST: Final = "https://api.sendgrid.com"


#: How this provider's HTTP statuses read (the common table, in its own words).
SENDGRID_STATUSES: Final = refusals(
    {
        400: "message refused (from, to, subject or content invalid)",
        401: "API key refused",
        403: "API key lacks mail.send permission or sender is not verified",
        413: "message too large",
    }
)


class SendGridSettings(BaseModel):
    """What the SendGrid channel needs; the key is a SecretStr and never printed."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    api_key: SecretStr
    sender: str = Field(min_length=3, pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
    host: str = Field(default=SENDGRID_HOST, pattern=r"^https?://[^/\s]+")
    timeout: float = Field(default=10.0, gt=0, le=120)


class SendGridEmail(ProviderChannel):
    """E-mail to one person per message; the API client is built once, here."""

    name = "sendgrid"
    carries = "email"
    status_table = SENDGRID_STATUSES

    def __init__(self, settings: SendGridSettings) -> None:
        key = settings.api_key.get_secret_value()
        if not key.strip():
            raise ChannelPermanentError(self.name, "the API key is empty")
        REDACTOR.protect(key)
        self.settings = settings
        self._client = SendGridAPIClient(api_key=key, host=settings.host)
        # SendGridAPIClient.send() passes no timeout; the underlying client honours this.
        self._client.client.timeout = settings.timeout
        REDACTOR.install()

    def __repr__(self) -> str:
        return f"SendGridEmail(host={self.settings.host!r}, sender={self.settings.sender!r})"

    def publish(self, message: OutboundMessage) -> str | None:
        """POST one mail; the ``X-Message-Id`` of the 202 is the receipt."""
        mail = Mail(
            from_email=self.settings.sender,
            to_emails=message.recipient,
            subject=message.subject or "(no subject)",
            plain_text_content=message.body or " ",
        )
        try:
            response = self._client.send(mail)
        except SendGridHTTPError as exc:
            raise self.error_for_status(
                int(exc.status_code),
                detail=_first_error(exc.body),
                retry_after=_retry_after(exc.headers),
            ) from None
        except TimeoutError as exc:
            raise ChannelTransientError(
                self.name, f"no answer within {self.settings.timeout:g} s"
            ) from exc
        except urllib.error.URLError as exc:
            reason = exc.reason
            if isinstance(reason, TimeoutError):
                raise ChannelTransientError(
                    self.name, f"no answer within {self.settings.timeout:g} s"
                ) from None
            raise ChannelTransientError(
                self.name, f"cannot connect: {clip(type(reason).__name__)}"
            ) from None
        except (ConnectionError, HttpClientError) as exc:
            raise ChannelTransientError(
                self.name, f"connection failed: {type(exc).__name__}"
            ) from None
        status = int(response.status_code)
        if status not in (200, 202):
            raise self.error_for_status(status)
        return response.headers.get("X-Message-Id") or None


def _first_error(body: Any) -> str | None:
    """The first ``errors[].message`` of a SendGrid error body: a reason, not the body."""
    try:
        data = json.loads(body.decode("utf-8") if isinstance(body, bytes) else str(body))
        error = data["errors"][0]
        text = str(error.get("message", ""))
        field = error.get("field")
        return f"{text} (field {field})" if field else text or None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return None


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After``, else from ``X-RateLimit-Reset`` (epoch)."""
    if headers is None:
        return None
    seconds = parse_retry_after(headers.get("Retry-After"))
    if seconds is not None:
        return seconds
    reset = parse_retry_after(headers.get("X-RateLimit-Reset"))
    return None if reset is None else max(reset - time.time(), 0.0)
